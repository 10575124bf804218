"""DSN (Bousmalis, Trigeorgis, Silberman, Krishnan & Erhan, "Domain Separation Networks", NeurIPS 2016).

A shared encoder E_c (the backbone's G_f) and one private encoder per domain (E_p^s, E_p^t);
a shared decoder D rebuilds each input from E_c(x) + E_p(x). With the DANN similarity loss:
L = L_task + a L_recon + b L_difference + g L_similarity, L_similarity the domain loss of a
G_d on shared codes behind the gradient reversal layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from dann import backbones, discriminators
from dann.methods.base import Method

DECODER_HIDDEN = 512  # codes (AlexNet: 9216-d) pass through this before the first feature map


def scale_invariant_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Eigen, Puhrsch & Fergus (NIPS 2014), DSN's L_recon: per example
    (1/k)||x - x̂||² - (1/k²)(Σ(x - x̂))², k values each; the mean over examples.

    It equals the variance of the example's error, so a constant shift of x̂ costs nothing;
    computed as such (two-pass, no cancellation to a small negative number).
    """
    error = rearrange(x - x_hat, "b ... -> b (...)")  # (B, k)
    return error.var(dim=1, correction=0).mean()


def difference_loss(h_c: torch.Tensor, h_p: torch.Tensor) -> torch.Tensor:
    """Soft subspace orthogonality ||H_c^T H_p||_F² / d² of shared and private codes (B, d) of one batch.

    As in the DSN code, each code dimension is centred over the batch and each code (row)
    scaled to unit L2 norm, so the loss measures the overlap of the directions, not the
    codes' size (which the encoders could otherwise shrink to zero); and, as there and in
    the common PyTorch port, the squared entries of the d x d correlation are averaged, not
    summed: the weights (b = 0.075) were tuned at that scale. Summed, the term outweighs
    the task loss and wipes out the shared code (seen on the two-moons test: chance accuracy).
    """
    h_c, h_p = (F.normalize(h - h.mean(0), dim=1) for h in (h_c, h_p))
    # ||H_c^T H_p||_F² = tr(H_c H_c^T H_p H_p^T) = sum((H_c H_c^T) ∘ (H_p H_p^T)): two B x B
    # Gram matrices instead of the d x d product (d = 9216 for AlexNet: 85M entries).
    return ((h_c @ h_c.T) * (h_p @ h_p.T)).sum() / (h_c.shape[1] * h_p.shape[1])


def reconstruction_side(size: int) -> int:
    """Side of DSN's reconstructions: the whole input for small images (LeNet's 32x32),
    64x64 for large ones (AlexNet, ResNet: a 224x224 decoder would outweigh the task)."""
    return size if size <= 32 else 64


class ImageDecoder(nn.Module):
    """D: code (B, dim) -> image (B, 3, side, side), in the inputs' normalized units.

    A projection to a `width` x 4 x 4 map, then stages of (upsample x2, 3x3 conv, ReLU) halving
    the channels, the last stage landing on `side`, and a 3x3 conv to RGB (no activation:
    normalized pixels are signed). About 7M parameters for AlexNet's 9216-d codes.
    """

    def __init__(self, dim: int, side: int, width: int = 256):
        super().__init__()
        self.width = width
        self.project = nn.Sequential(nn.Linear(dim, DECODER_HIDDEN), nn.ReLU(inplace=True),
                                     nn.Linear(DECODER_HIDDEN, width * 4 * 4), nn.ReLU(inplace=True))
        stages, channels, current = [], width, 4
        while current < side:
            current = min(2 * current, side)
            stages += [nn.Upsample(size=current), nn.Conv2d(channels, channels // 2, 3, padding=1),
                       nn.ReLU(inplace=True)]
            channels //= 2
        self.upsample = nn.Sequential(*stages)
        self.to_rgb = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = rearrange(self.project(code), "b (c h w) -> b c h w", c=self.width, h=4, w=4)  # (B, width, 4, 4)
        return self.to_rgb(self.upsample(x))  # (B, 3, side, side)


class DSN(Method):
    """predict(x) = G_y(E_c(x)) and embed(x) = E_c(x): Method's, with E_c as `features`."""

    def __init__(self, config, num_classes: int):
        backbone = backbones.from_config(config, num_classes)
        super().__init__(backbone, config)  # self.features = E_c, self.classifier = G_y
        # E_p^s, E_p^t: G_f of two more backbones built the same way; their G_y are dropped
        # (kept, they would get no gradient, which DDP without find_unused_parameters refuses).
        self.private_s = backbones.from_config(config, num_classes).features
        self.private_t = backbones.from_config(config, num_classes).features
        self.slow_parts += [self.private_s, self.private_t]  # pretrained copies of G_f, like it
        if backbone.make_decoder is not None:  # non-image inputs: the backbone's decoder, target = x
            self.decoder, self.recon_side = backbone.make_decoder(backbone.dim), None
        else:
            self.recon_side = reconstruction_side(backbone.input.size)
            self.decoder = ImageDecoder(backbone.dim, self.recon_side, self.hp.dsn_decoder_width)
        G_d = discriminators.build(config, backbone)  # on shared codes
        self.adversary = discriminators.DomainAdversary(G_d, self.hp)

    def reconstruction_target(self, x: torch.Tensor) -> torch.Tensor:
        """What D must rebuild: the normalized input the encoders see, pooled to the decoder's side."""
        return x if self.recon_side is None else F.adaptive_avg_pool2d(x, self.recon_side)

    def step(self, x_s, y_s, x_t, progress):
        n_s, n_t = len(x_s), len(x_t)
        x = torch.cat([x_s, x_t])
        h_c_s, h_c_t = self.per_domain(self.features, x_s, x_t)  # shared codes (B, dim) each
        h_p_s, h_p_t = self.private_s(x_s), self.private_t(x_t)  # private codes
        h_c, h_p = torch.cat([h_c_s, h_c_t]), torch.cat([h_p_s, h_p_t])  # (B_s + B_t, dim)

        class_loss, class_metrics = self.source_loss(self.classifier(h_c_s), y_s)  # L_task

        x_hat, target = self.decoder(h_c + h_p), self.reconstruction_target(x)  # D(E_c(x) + E_p(x))
        recon_loss = sum(scale_invariant_mse(x_hat_d, target_d)  # L_recon, per domain
                         for x_hat_d, target_d in zip(x_hat.split([n_s, n_t]), target.split([n_s, n_t])))

        difference = difference_loss(h_c_s, h_p_s) + difference_loss(h_c_t, h_p_t)  # L_difference

        similarity_loss, metrics = self.adversary(h_c_s, h_c_t, progress)  # L_similarity (DANN)
        extra, extra_metrics = self.target_terms(self.classifier(h_c_t)) if self.uses_target_logits() else (0.0, {})

        hp = self.hp  # the paper's alpha, beta, gamma (renamed: alpha is the gradient reversal weight here)
        loss = (class_loss + hp.dsn_recon * recon_loss + hp.dsn_difference * difference
                + hp.dsn_similarity * similarity_loss + extra)
        return loss, {
            "class_loss": class_metrics["class_loss"], "recon_loss": recon_loss.detach(),
            "difference_loss": difference.detach(), "similarity_loss": metrics.pop("domain_loss"),
            "class_acc": class_metrics["class_acc"], **metrics, **extra_metrics}

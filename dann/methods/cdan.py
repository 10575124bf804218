"""CDAN (Long, Cao, Wang & Jordan, "Conditional Adversarial Domain Adaptation", NeurIPS 2018).

DANN whose discriminator sees the features f conditioned on the class prediction g: the
multilinear map T(f, g) = f ⊗ g, or its randomized approximation when d * C is large.
CDAN+E (--entropy_conditioning) weights each example's domain loss by 1 + exp(-H(g)).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from dann import backbones, discriminators
from dann.discriminators import grad_reverse
from dann.methods.base import Method, accuracy, domain_loss
from dann.schedules import alpha_at

MAX_MULTILINEAR_DIM = 4096  # the paper's threshold: above it, the randomized map


def multilinear_map(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """T(f, g) = f ⊗ g: features (B, d) and class probabilities (B, C) -> (B, d * C)."""
    return rearrange(torch.einsum("bd,bc->bdc", f, g), "b d c -> b (d c)")


class RandomizedMultilinearMap(nn.Module):
    """T(f, g) = (R_f f) ⊙ (R_g g) / sqrt(d_out), R_f and R_g fixed Gaussian matrices.

    Its inner products approximate those of f ⊗ g in expectation (the paper's Theorem 1).
    The matrices are buffers: drawn once, never trained, saved in checkpoints (a resumed
    run must see the same map its discriminator was trained on).
    """

    def __init__(self, d: int, num_classes: int, d_out: int):
        super().__init__()
        self.register_buffer("R_f", torch.randn(d, d_out))
        self.register_buffer("R_g", torch.randn(num_classes, d_out))

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        # (B, d) @ (d, d_out) ⊙ (B, C) @ (C, d_out) -> (B, d_out)
        return (f @ self.R_f) * (g @ self.R_g) / math.sqrt(self.R_f.shape[1])


def entropy_weights(g: torch.Tensor) -> torch.Tensor:
    """CDAN+E's w = 1 + exp(-H(g)) per example, g: class probabilities (B, C) -> (B,).

    In [1, 2]: 2 for a certain (one-hot) prediction, 1 + 1/C for a uniform one, so that
    examples the classifier is sure of count more in the domain loss.
    """
    entropy = -torch.special.xlogy(g, g).sum(1)  # xlogy: 0 log 0 = 0 for one-hot g
    return 1.0 + torch.exp(-entropy)


class CDAN(Method):
    def __init__(self, config, num_classes: int):
        backbone = backbones.build(config.backbone, num_classes, config.pretrained)
        super().__init__(backbone)
        d = backbone.dim
        if d * num_classes > MAX_MULTILINEAR_DIM:
            self.random_map = RandomizedMultilinearMap(d, num_classes, config.cdan_random_dim)
            map_dim = config.cdan_random_dim
        else:
            self.random_map = None
            map_dim = d * num_classes
        self.discriminator = discriminators.build(config.discriminator, backbone, in_features=map_dim)  # G_d
        self.alpha, self.alpha_schedule = config.alpha, config.alpha_schedule
        self.entropy_conditioning = config.entropy_conditioning

    def conditioned_features(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """T(f, g): what G_d sees."""
        return multilinear_map(f, g) if self.random_map is None else self.random_map(f, g)

    def step(self, batch_s, batch_t, progress):
        x_s, y_s = batch_s
        n_s, n_t = len(x_s), len(batch_t)
        alpha = alpha_at(progress, self.alpha, self.alpha_schedule)
        f = self.features(torch.cat([x_s, batch_t]))  # (B_s + B_t, d)
        logits = self.classifier(f)  # (B_s + B_t, C); the target half only conditions G_d
        class_logits = logits[:n_s]
        # g detached as in the authors' code: the domain loss trains G_f through f only,
        # and G_y learns from the labels alone.
        g = logits.detach().softmax(1)
        # The GRL sits between T(f, g) and G_d; T is linear in f, so this reverses the
        # gradient G_f gets through the map, exactly as reversing f before it would.
        d_s, d_t = self.discriminator(grad_reverse(self.conditioned_features(f, g), alpha)).split([n_s, n_t])
        weights = entropy_weights(g).split([n_s, n_t]) if self.entropy_conditioning else None
        class_loss = F.cross_entropy(class_logits, y_s)
        d_loss, d_acc = domain_loss(d_s, d_t, weights)
        return class_loss + d_loss, {
            "class_loss": class_loss.detach(), "domain_loss": d_loss.detach(), "domain_acc": d_acc.detach(),
            "class_acc": accuracy(class_logits, y_s).detach(), "alpha": alpha}

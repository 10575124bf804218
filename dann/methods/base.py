"""The interface every UDA method implements, in the spirit of DomainBed's `Algorithm`.

A method is an nn.Module holding its networks. It builds them from a backbone and the
number of classes, says whether it needs target batches, and gives `step` (the loss of
one iteration; the loop runs backward and the optimizer) and `predict` (class logits).
`forward` dispatches to both, so that every call goes through the DDP wrapper that
`accelerator.prepare` puts around the method (gradients are synchronized only then).
"""
from __future__ import annotations

import torch
from torch import nn

from dann.backbones import Backbone, InputSpec


class Method(nn.Module):
    needs_target = True  # does step() use target batches (unlabeled)?

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.features = backbone.features  # G_f
        self.classifier = backbone.classifier  # G_y
        self.input_spec: InputSpec = backbone.input

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, x_t: torch.Tensor | None = None,
                progress: float = 0.0):
        """model(x): class logits. model(x_s, y_s, x_t, progress): (loss, metrics) of one step."""
        if y is None:
            return self.predict(x)
        return self.step((x, y), x_t, progress)

    def step(self, batch_s: tuple[torch.Tensor, torch.Tensor], batch_t: torch.Tensor | None,
             progress: float) -> tuple[torch.Tensor, dict]:
        """The loss of one iteration and metrics to log (tensors or floats).

        batch_s: source images and labels; batch_t: target images (no labels ever reach a
        method), None when `needs_target` is False; progress: p in [0, 1] over the whole run.
        """
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Features for the t-SNE figures (G_f, or a method's shared code)."""
        return self.features(x)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == labels).float().mean()


def domain_loss(d_s: torch.Tensor, d_t: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """CE(G_d on source, 0) + CE(G_d on target, 1) and the discriminator's accuracy.

    The sum (not the mean) of the two terms: the loss the seed's separate backward calls
    optimise. `weights`: per-example weights of each term (CDAN's entropy conditioning),
    normalized to sum to 1 within each domain.
    """
    zeros = torch.zeros(len(d_s), dtype=torch.long, device=d_s.device)
    ones = torch.ones(len(d_t), dtype=torch.long, device=d_t.device)
    if weights is None:
        loss = nn.functional.cross_entropy(d_s, zeros) + nn.functional.cross_entropy(d_t, ones)
    else:
        w_s, w_t = (w / w.sum() for w in weights)
        loss = ((w_s * nn.functional.cross_entropy(d_s, zeros, reduction="none")).sum()
                + (w_t * nn.functional.cross_entropy(d_t, ones, reduction="none")).sum())
    acc = torch.cat([d_s.argmax(1) == 0, d_t.argmax(1) == 1]).float().mean()
    return loss, acc

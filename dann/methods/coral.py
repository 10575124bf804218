"""Deep CORAL (Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation",
ECCV-W 2016): source cross-entropy plus w times the distance between the second-order
statistics of source and target features,

    L_CORAL = ||C_s - C_t||_F^2 / (4 d^2),  C = (1 / (n - 1)) (F^T F - (1/n) (1^T F)^T (1^T F)),

C the covariance of a batch of features F (n, d) (the paper's eq. 1-2).

--coral_mean_weight m adds m ||mu_s - mu_t||^2 / d, the squared difference of the feature means,
as DomainBed's CORAL does (its loss, at its weight 1, is this one with --coral_weight 4 and
--coral_mean_weight 1).
"""
from __future__ import annotations

import torch

from dann import backbones
from dann.methods.base import Method


def covariance(f: torch.Tensor) -> torch.Tensor:
    """The unbiased covariance of the rows of f (n, d): (d, d)."""
    centred = f - f.mean(0, keepdim=True)
    return centred.T @ centred / (len(f) - 1)


def coral_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    d = f_s.shape[1]
    return (covariance(f_s) - covariance(f_t)).pow(2).sum() / (4 * d * d)


def mean_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """||mu_s - mu_t||^2 / d: the squared difference of the features' means, averaged over d."""
    return (f_s.mean(0) - f_t.mean(0)).pow(2).mean()


class CORAL(Method):
    def __init__(self, config, num_classes: int):
        super().__init__(backbones.from_config(config, num_classes), config)

    def step(self, x_s, y_s, x_t, progress):
        f_s, f_t, logits_s, logits_t = self.features_and_logits(x_s, x_t)
        alignment = coral_loss(f_s.float(), f_t.float())  # float32: d x d sums of squares
        class_loss, metrics = self.source_loss(logits_s, y_s)
        extra, extra_metrics = self.target_terms(logits_t)
        loss = class_loss + self.hp.coral_weight * alignment + extra
        metrics = {**metrics, "coral_loss": alignment.detach(), **extra_metrics}
        if self.hp.coral_mean_weight:
            means = mean_loss(f_s.float(), f_t.float())
            loss, metrics["coral_mean_loss"] = loss + self.hp.coral_mean_weight * means, means.detach()
        return loss, metrics

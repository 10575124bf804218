"""FixMatch on the target (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with
Consistency and Confidence", NeurIPS 2020), as a UDA method: source cross-entropy plus
consistency self-training on two views of each target image (dann/augment.py, on the device):
the weak view's confident prediction is the label the strong view is trained to give,

    L = CE(G_y(G_f(x_s)), y_s) + w (1/B) sum_i 1[max_c q_ic >= tau] CE(G_y(G_f(A(x_t_i))), argmax_c q_ic),

q = softmax of the (detached) logits of the weak view a(x_t), A the strong view (RandAugment
and Cutout), tau = --fixmatch_threshold, w = --fixmatch_weight. train/fixmatch_fraction logs
the share of target images above the threshold.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dann import backbones
from dann.methods.base import Method


def fixmatch_loss(logits_weak: torch.Tensor, logits_strong: torch.Tensor, threshold: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The consistency loss above (the mean over all B images) and the mask of confident ones."""
    confidence, pseudo = logits_weak.detach().softmax(1).max(1)
    mask = (confidence >= threshold).float()
    return (mask * F.cross_entropy(logits_strong, pseudo, reduction="none")).mean(), mask


class FixMatch(Method):
    target_views = ("weak", "strong")

    def __init__(self, config, num_classes: int):
        super().__init__(backbones.from_config(config, num_classes), config)

    def step(self, x_s, y_s, x_t, progress):
        x_weak, x_strong = x_t
        both = torch.cat([x_weak, x_strong])  # one target batch of two views: one domain's statistics
        f_s, f_t, logits_s, logits_t = self.features_and_logits(x_s, both)
        logits_weak, logits_strong = logits_t.split([len(x_weak), len(x_strong)])
        consistency, mask = fixmatch_loss(logits_weak, logits_strong, self.hp.fixmatch_threshold)
        class_loss, metrics = self.source_loss(logits_s, y_s)
        extra, extra_metrics = self.target_terms(logits_weak)
        return class_loss + self.hp.fixmatch_weight * consistency + extra, {
            **metrics, "fixmatch_loss": consistency.detach(), "fixmatch_fraction": mask.mean(), **extra_metrics}

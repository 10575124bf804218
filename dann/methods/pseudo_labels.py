"""Self-training with confident pseudo-labels (Lee, ICML-W 2013), with FixMatch's confidence
threshold (Sohn et al., NeurIPS 2020) but not its augmentations: each target prediction
whose top softmax probability reaches --pl_threshold becomes that example's label.

    L = CE(G_y(G_f(x_s)), y_s) + w(p) * (1/B) sum_i 1[max_c q_ic >= tau] CE(G_y(G_f(x_t_i)), argmax_c q_ic)

q = softmax of the same (detached) target logits; w(p) = --pl_weight * (2 / (1 + exp(-10 p)) - 1),
the DANN ramp, so that early, unreliable predictions teach little. train/pl_fraction logs
the share of target examples above the threshold.
"""
from __future__ import annotations

import torch.nn.functional as F

from dann import backbones
from dann.methods.base import Method
from dann.schedules import alpha_at


class PseudoLabels(Method):
    def __init__(self, config, num_classes: int):
        super().__init__(backbones.from_config(config, num_classes), config)

    def step(self, x_s, y_s, x_t, progress):
        _, _, logits_s, logits_t = self.features_and_logits(x_s, x_t)
        class_loss, class_metrics = self.source_loss(logits_s, y_s)
        confidence, pseudo = logits_t.detach().softmax(1).max(1)
        keep = (confidence >= self.hp.pl_threshold).float()
        pl_loss = (keep * F.cross_entropy(logits_t, pseudo, reduction="none")).mean()
        weight = alpha_at(progress, self.hp.pl_weight, "dann")
        extra, metrics = self.target_terms(logits_t)
        return class_loss + weight * pl_loss + extra, {
            **class_metrics, "pl_loss": pl_loss.detach(), "pl_fraction": keep.mean(), "pl_weight": weight, **metrics}

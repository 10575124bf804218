"""MCD (Saito, Watanabe, Ushiku & Harada, "Maximum Classifier Discrepancy for Unsupervised
Domain Adaptation", CVPR 2018): two classifiers F1 (G_y) and F2 on G_f, and three updates per
iteration, so the method owns its update:

    A: G_f, F1, F2 minimize CE(F1(f_s), y_s) + CE(F2(f_s), y_s);
    B: F1, F2 (G_f fixed) minimize the same minus w d(F1(f_t), F2(f_t)): disagree on the target;
    C: G_f (F1, F2 fixed) minimizes w d(F1(f_t), F2(f_t)), --mcd_steps times;

d(p1, p2) = mean |softmax(p1) - softmax(p2)| (the paper's L1 discrepancy). Predictions are F1's.
--entropy_weight adds the target entropy of both heads to A and B (TLlib's example: 0.01).
"""
from __future__ import annotations

import torch

from dann import backbones
from dann.methods.base import Method


def discrepancy(logits_1: torch.Tensor, logits_2: torch.Tensor) -> torch.Tensor:
    """mean over examples and classes of |p1 - p2|, p = softmax(logits)."""
    return (logits_1.softmax(1) - logits_2.softmax(1)).abs().mean()


class MCD(Method):
    def __init__(self, config, num_classes: int):
        backbone = backbones.from_config(config, num_classes)
        super().__init__(backbone, config)
        self.classifier2 = backbone.new_head(num_classes)  # F2; F1 is G_y

    def heads(self) -> list[torch.nn.Parameter]:
        return [*self.classifier.parameters(), *self.classifier2.parameters()]

    def heads_loss(self, f_s, f_t, y_s):
        """Both heads' source cross-entropy (plus their target terms, if asked), its metrics, and
        both heads' target logits."""
        y1_s, y1_t = self.per_domain(self.classifier, f_s, f_t)
        y2_s, y2_t = self.per_domain(self.classifier2, f_s, f_t)
        loss_1, metrics = self.source_loss(y1_s, y_s)
        loss_2, _ = self.source_loss(y2_s, y_s)
        extra_1, extra_metrics = self.target_terms(y1_t)
        extra_2, _ = self.target_terms(y2_t)
        return loss_1 + loss_2 + extra_1 + extra_2, {**metrics, **extra_metrics}, y1_t, y2_t

    def update(self, x_s, y_s, x_t, progress, optimize):
        w = self.hp.mcd_weight
        # A: everything, on the source
        f_s, f_t = self.per_domain(self.features, x_s, x_t)
        loss, metrics, _, _ = self.heads_loss(f_s, f_t, y_s)
        optimize(loss)
        # B: the heads learn to disagree on the target, G_f fixed
        with torch.no_grad():
            f_s, f_t = self.per_domain(self.features, x_s, x_t)
        loss, _, y1_t, y2_t = self.heads_loss(f_s, f_t, y_s)
        disagreement = discrepancy(y1_t, y2_t)
        optimize(loss - w * disagreement, self.heads())
        # C: G_f makes them agree, the heads fixed
        for _ in range(self.hp.mcd_steps):
            f_t = self.features(x_t)
            agreement = discrepancy(self.classifier(f_t), self.classifier2(f_t))
            optimize(w * agreement, self.features.parameters())
        return {**metrics, "discrepancy_heads": disagreement.detach(), "discrepancy_features": agreement.detach()}

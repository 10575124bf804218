"""DANN (Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015).

One iteration, as the homework defines it: (1) source -> G_y, cross-entropy;
(2) source -> R_alpha -> G_d, domain 0; (3) target -> R_alpha -> G_d, domain 1. The three
losses are summed so that backward (and DDP's all-reduce) runs once: the same gradients as
three backward calls (tests/test_dann_update.py). With --entropy_weight / --mcc_weight, the
target terms are added (e.g. DANN + MCC).
"""
from __future__ import annotations

from dann import backbones, discriminators
from dann.methods.base import Method


class DANN(Method):
    def __init__(self, config, num_classes: int):
        backbone = backbones.from_config(config, num_classes)
        super().__init__(backbone, config)
        self.adversary = discriminators.DomainAdversary(discriminators.build(config, backbone), self.hp)  # G_d

    def step(self, x_s, y_s, x_t, progress):
        f_s, f_t = self.per_domain(self.features, x_s, x_t)
        if self.hp.classify_target:  # G_y sees the target batch too (its batch-norm statistics)
            logits_s, logits_t = self.per_domain(self.classifier, f_s, f_t)
        else:
            logits_s = self.classifier(f_s)
            logits_t = self.classifier(f_t) if self.uses_target_logits() else None
        class_loss, metrics = self.source_loss(logits_s, y_s)  # (1)
        d_loss, d_metrics = self.adversary(f_s, f_t, progress)  # (2) and (3)
        extra, extra_metrics = self.target_terms(logits_t) if self.uses_target_logits() else (0.0, {})
        return class_loss + d_loss + extra, {**metrics, **d_metrics, **extra_metrics}

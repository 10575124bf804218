"""MCC alone (Jin, Wang, Long & Wang, "Minimum Class Confusion for Versatile Domain
Adaptation", ECCV 2020): source cross-entropy plus --mcc_weight times the class confusion
of the target predictions (dann/methods/terms.py). On top of DANN or CDAN it is their
--mcc_weight; here it is the whole method, with no discriminator.
"""
from __future__ import annotations

from dann import backbones
from dann.methods.base import Method


class MCC(Method):
    def __init__(self, config, num_classes: int):
        super().__init__(backbones.from_config(config, num_classes), config)

    def step(self, x_s, y_s, x_t, progress):
        _, _, logits_s, logits_t = self.features_and_logits(x_s, x_t)
        class_loss, metrics = self.source_loss(logits_s, y_s)
        extra, extra_metrics = self.target_terms(logits_t)  # MCC (and entropy, if asked)
        return class_loss + extra, {**metrics, **extra_metrics}

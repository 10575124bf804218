"""MCC alone (Jin, Wang, Long & Wang, "Minimum Class Confusion for Versatile Domain
Adaptation", ECCV 2020): source cross-entropy plus --mcc_weight times the class confusion
of the target predictions (dann/methods/terms.py). On top of DANN or CDAN it is their
--mcc_weight; here it is the whole method, with no discriminator.
"""
from __future__ import annotations

import torch.nn.functional as F

from dann import backbones
from dann.methods.base import Method, accuracy


class MCC(Method):
    def __init__(self, config, num_classes: int):
        super().__init__(backbones.from_config(config, num_classes), config)

    def step(self, batch_s, batch_t, progress):
        x_s, y_s = batch_s
        f_s, f_t = self.per_domain(self.features, x_s, batch_t)
        logits_s, logits_t = self.per_domain(self.classifier, f_s, f_t)
        class_loss = F.cross_entropy(logits_s, y_s)
        extra, metrics = self.target_terms(logits_t)  # MCC (and entropy, if asked)
        return class_loss + extra, {"class_loss": class_loss.detach(), "class_acc": accuracy(logits_s, y_s).detach(),
                                    **metrics}

"""DANN (Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015).

One iteration, as the seed homework defines it: (1) source -> G_y, cross-entropy;
(2) source -> R_alpha -> G_d, domain 0; (3) target -> R_alpha -> G_d, domain 1. The three
losses are summed so that backward (and DDP's all-reduce) runs once: the same gradients as
three backward calls (tests/test_dann_update.py). G_f runs once, on both batches together.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dann import backbones, discriminators
from dann.discriminators import grad_reverse
from dann.methods.base import Method, accuracy, domain_loss
from dann.schedules import alpha_at


class DANN(Method):
    def __init__(self, config, num_classes: int):
        backbone = backbones.build(config.backbone, num_classes, config.pretrained)
        super().__init__(backbone)
        self.discriminator = discriminators.build(config.discriminator, backbone)  # G_d
        self.alpha, self.alpha_schedule = config.alpha, config.alpha_schedule

    def step(self, batch_s, batch_t, progress):
        x_s, y_s = batch_s
        alpha = alpha_at(progress, self.alpha, self.alpha_schedule)
        f_s, f_t = self.features(torch.cat([x_s, batch_t])).split([len(x_s), len(batch_t)])
        class_logits = self.classifier(f_s)  # (1)
        d_s = self.discriminator(grad_reverse(f_s, alpha))  # (2)
        d_t = self.discriminator(grad_reverse(f_t, alpha))  # (3)
        class_loss = F.cross_entropy(class_logits, y_s)
        d_loss, d_acc = domain_loss(d_s, d_t)
        return class_loss + d_loss, {
            "class_loss": class_loss.detach(), "domain_loss": d_loss.detach(), "domain_acc": d_acc.detach(),
            "class_acc": accuracy(class_logits, y_s).detach(), "alpha": alpha}

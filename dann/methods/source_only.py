"""The source-only baseline (train_baseline.py): G_y on G_f, cross-entropy on labeled batches,
no discriminator. With --train_on target it is the trained-on-target upper bound."""
from __future__ import annotations

import torch.nn.functional as F

from dann import backbones
from dann.methods.base import Method, accuracy


class SourceOnly(Method):
    needs_target = False

    def __init__(self, config, num_classes: int):
        super().__init__(backbones.from_config(config, num_classes), config)

    def step(self, batch_s, batch_t, progress):
        x_s, y_s = batch_s
        logits = self.predict(x_s)
        class_loss = F.cross_entropy(logits, y_s)
        return class_loss, {"class_loss": class_loss.detach(), "class_acc": accuracy(logits, y_s).detach()}

"""The source-only baseline (train_baseline.py): G_y on G_f, cross-entropy on labeled batches,
no discriminator. With --train_on target it is the trained-on-target upper bound."""
from __future__ import annotations

from dann import backbones
from dann.methods.base import Method


class SourceOnly(Method):
    needs_target = False

    def __init__(self, config, num_classes: int):
        super().__init__(backbones.from_config(config, num_classes), config)

    def step(self, x_s, y_s, x_t, progress):
        return self.source_loss(self.predict(x_s), y_s)

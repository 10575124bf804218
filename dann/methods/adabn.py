"""AdaBN (Li, Wang, Shi, Liu & Hou, "Adaptive Batch Normalization for practical domain
adaptation", Pattern Recognition 2018): trained exactly as the source-only baseline; at
test time every batch-norm layer normalizes with the statistics of the domain being
evaluated, computed on that domain's unlabeled images. The cheapest strong baseline for
networks with batch norm (lenet_bn, the ResNets, or any backbone with --bottleneck_dim).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from dann.errors import UserError
from dann.methods.source_only import SourceOnly


class AdaBN(SourceOnly):
    def __init__(self, config, num_classes: int):
        super().__init__(config, num_classes)
        if not batch_norms(self):
            raise UserError(f"--method adabn: --backbone {config.backbone} has no batch norm, so AdaBN would be "
                            f"the baseline; use lenet_bn, resnet18, resnet50 or add --bottleneck_dim N")

    def evaluation_statistics(self, unlabeled_batches):
        return domain_statistics(self, unlabeled_batches)


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def domain_statistics(model: nn.Module, unlabeled_batches):
    """Within the block, the batch-norm layers of `model` hold the mean and variance of its
    activations over `unlabeled_batches` (images only), averaged over batches; afterwards
    their own statistics come back, so training goes on as if nothing happened."""
    layers = batch_norms(model)
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
             for m in layers]
    was_training = model.training
    model.eval()  # dropout off; only the batch-norm layers measure
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
        m.train()
    with torch.no_grad():
        for x in unlabeled_batches:
            model.predict(x)
    for m in layers:
        m.eval()
    try:
        yield
    finally:
        for m, (mean, var, count, momentum) in zip(layers, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
            m.momentum = momentum
        model.train(was_training)

"""The optimizer and its learning rate: SGD over a method's parameter groups, each at its own
multiple of --lr (`lr_mult`, TLlib's get_parameters), and the schedule applied on top of them.
`set_lr` is the one place that writes a group's rate.
"""
from __future__ import annotations

import torch

from dann.schedules import lr_factor


def make_optimizer(model: torch.nn.Module, config) -> torch.optim.Optimizer:
    """SGD over the method's parameter groups (`Method.param_groups`: each with its `lr_mult`)."""
    groups = model.param_groups() if hasattr(model, "param_groups") else [{"params": model.parameters()}]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad], "lr_mult": g.get("lr_mult", 1.0)}
              for g in groups]
    optimizer_kwargs = dict(lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                            nesterov=config.nesterov)
    try:  # fused: one kernel for all parameters, and it can skip a step on the device
        optimizer = torch.optim.SGD(groups, fused=True, **optimizer_kwargs)
    except RuntimeError:  # a device without fused SGD
        optimizer = torch.optim.SGD(groups, **optimizer_kwargs)
    set_lr(optimizer, config.lr)
    return optimizer


def lr_at(config, progress: float, epoch: int, step: int = 0) -> float:
    """--lr under --lr_schedule at training progress p (epoch and iteration `step` counted from 0)."""
    return config.lr * lr_factor(progress, epoch, config.lr_schedule, config.step_size, config.gamma, step=step,
                                 lr_gamma=config.lr_gamma, lr_decay=config.lr_decay)


def set_lr(optimizer, lr: float) -> None:
    """Every group at its own multiple of `lr`."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]


def restart(optimizer) -> None:
    """Forget the momentum (a new phase of a run starts from rest)."""
    getattr(optimizer, "optimizer", optimizer).state.clear()  # AcceleratedOptimizer wraps the torch one


def release_optimizer(optimizer) -> None:
    """Training is over: its gradients and momentum go (for AlexNet + G_d, 0.9 GB), before
    the end-of-run scores, reverse validation's retraining among them, allocate their own."""
    inner = getattr(optimizer, "optimizer", optimizer)  # AcceleratedOptimizer wraps the torch one
    inner.zero_grad(set_to_none=True)
    inner.state.clear()

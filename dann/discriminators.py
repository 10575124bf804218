"""The domain discriminator G_d, the gradient reversal layer R_alpha in front of it, and the
adversarial module DANN, CDAN and DSN share (`DomainAdversary`).

Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015: G_d
learns to tell source (0) from target (1) features, and R_alpha makes G_f learn features
that fool it. A discriminator plug-in is a function `(backbone, in_features, hparams) ->
nn.Module` giving 2 domain logits, registered in `dann/plugins.py`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dann import plugins
from dann.backbones import Backbone
from dann.schedules import alpha_at


class GradientReversal(torch.autograd.Function):
    """R_alpha(x) = x in the forward pass; dR/dx = -alpha * I in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return -ctx.alpha * grad_output, None


def grad_reverse(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return GradientReversal.apply(x, alpha)


def reversal_weight(hp, progress: float, total_steps: int) -> float:
    """alpha under its schedule (hp: an hparams.GradientReversal) at progress p of a run of
    `total_steps` (the iteration i = p x total_steps, for warm_start)."""
    return alpha_at(progress, hp.alpha, hp.alpha_schedule, round(progress * total_steps), hp.alpha_warmup_steps)


# ---------------------------------------------------------------------------- G_d plug-ins

def copy_of_classifier(backbone: Backbone, in_features: int, hp=None) -> nn.Module:
    """The homework's G_d: the backbone's own (for AlexNet, G_y's architecture with fc6/fc7 copied)."""
    return backbone.make_discriminator(in_features)


def paper_mlp(backbone: Backbone, in_features: int, hp=None) -> nn.Module:
    """The DANN paper's discriminator for large images: 1024-1024-2 with ReLU and dropout."""
    return nn.Sequential(nn.Linear(in_features, 1024), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(1024, 1024), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(1024, 2))


def batch_norm_mlp(backbone: Backbone, in_features: int, hp) -> nn.Module:
    """TLlib's DomainDiscriminator: two Linear-BatchNorm-ReLU layers of --discriminator_width,
    then 2 logits. Batch norm keeps its inputs' scale in check, whatever G_f does to its own."""
    width = hp.discriminator_width
    return nn.Sequential(nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                         nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                         nn.Linear(width, 2))


def build(config, backbone: Backbone, in_features: int | None = None) -> nn.Module:
    """G_d of --discriminator on inputs of `in_features` (default: the backbone's feature size)."""
    make = plugins.load(plugins.DISCRIMINATORS, config.discriminator)
    return make(backbone, in_features or backbone.dim, config.discriminator_hp)


# ---------------------------------------------------------------------------- the shared module

def domain_loss(d_s: torch.Tensor, d_t: torch.Tensor, reduction: str = "sum",
                weights: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CE(G_d on source, 0) + CE(G_d on target, 1) ('sum': the loss the homework's three
    backward calls optimise) or half of it ('mean'), and the discriminator's accuracy.

    `weights`: per-example weights of each term (CDAN's entropy conditioning), normalized to
    sum to 1 within each domain.
    """
    zeros = torch.zeros(len(d_s), dtype=torch.long, device=d_s.device)
    ones = torch.ones(len(d_t), dtype=torch.long, device=d_t.device)
    if weights is None:
        loss = F.cross_entropy(d_s, zeros) + F.cross_entropy(d_t, ones)
    else:
        w_s, w_t = (w / w.sum() for w in weights)
        loss = ((w_s * F.cross_entropy(d_s, zeros, reduction="none")).sum()
                + (w_t * F.cross_entropy(d_t, ones, reduction="none")).sum())
    acc = torch.cat([d_s.argmax(1) == 0, d_t.argmax(1) == 1]).float().mean()
    return (loss if reduction == "sum" else loss / 2), acc


class DomainAdversary(nn.Module):
    """G_d behind R_alpha, with its domain loss and alpha schedule (TLlib's DomainAdversarialLoss).

    adversary(f_s, f_t, progress) -> (loss, metrics): G_d sees both domains' features in one
    pass (its batch-norm statistics, if any, are of the mixed batch it must tell apart);
    G_d learns to minimize the loss while R_alpha makes whatever feeds f_s, f_t maximize it.
    `hp`: an hparams.Adversarial (alpha, alpha_schedule, domain_loss_reduction).
    """

    def __init__(self, discriminator: nn.Module, hp):
        super().__init__()
        self.discriminator, self.hp = discriminator, hp
        self.total_steps = 0  # the run's length (Method.setup), for the warm_start schedule's iterations

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, progress: float,
                weights: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
        alpha = reversal_weight(self.hp, progress, self.total_steps)
        d_s, d_t = self.discriminator(grad_reverse(torch.cat([f_s, f_t]), alpha)).split([len(f_s), len(f_t)])
        loss, acc = domain_loss(d_s, d_t, self.hp.domain_loss_reduction, weights)
        return loss, {"domain_loss": loss.detach(), "domain_acc": acc.detach(), "alpha": alpha}

"""The domain discriminator G_d and the gradient reversal layer in front of it.

Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015: G_d
learns to tell source (0) from target (1) features, and the gradient reversal layer R
makes G_f learn features that fool it. A discriminator plug-in is a function
`(backbone, in_features) -> nn.Module` giving 2 domain logits, registered in `dann/plugins.py`.
"""
from __future__ import annotations

import torch
from torch import nn

from dann import plugins
from dann.backbones import Backbone


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


def copy_of_classifier(backbone: Backbone, in_features: int) -> nn.Module:
    """The seed's G_d: the backbone's own (for AlexNet, G_y's architecture with fc6/fc7 copied)."""
    return backbone.make_discriminator(in_features)


def paper_mlp(backbone: Backbone, in_features: int) -> nn.Module:
    """The DANN paper's discriminator for large images: 1024-1024-2 with ReLU and dropout."""
    return nn.Sequential(nn.Linear(in_features, 1024), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(1024, 1024), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(1024, 2))


def build(kind: str, backbone: Backbone, in_features: int | None = None) -> nn.Module:
    """G_d of kind `kind` on inputs of `in_features` (default: the backbone's feature size)."""
    return plugins.load(plugins.DISCRIMINATORS, kind)(backbone, in_features or backbone.dim)

"""torchvision's ResNet-18 and ResNet-50: G_f = everything up to the global average pool,
flattened (B, 512) / (B, 2048); G_y = torchvision's `fc`, made num_classes-way; the `copy`
discriminator = G_y's architecture (one Linear) with 2 outputs. They run on 32x32 digits too.
`--pretrained imagenet` is IMAGENET1K_V1, the weights DA papers and their reference tables use;
other torchvision weights by their enum name, e.g. `--pretrained IMAGENET1K_V2` (ResNet-50).
"""
from __future__ import annotations

from typing import Callable

from torch import nn
from torchvision.models import ResNet, ResNet18_Weights, ResNet50_Weights, resnet18, resnet50

from dann.backbones import (Backbone, InputSpec, download_weights, is_weights_name, load_matching,
                            read_state_dict)
from dann.errors import UserError


def build_resnet18(num_classes: int, pretrained: str) -> Backbone:
    """pretrained: 'imagenet' (IMAGENET1K_V1), 'none', a ResNet18_Weights name, or a torchvision ResNet-18 state dict."""
    return _build(resnet18, ResNet18_Weights, "ResNet-18", num_classes, pretrained)


def build_resnet50(num_classes: int, pretrained: str) -> Backbone:
    """pretrained: 'imagenet' (IMAGENET1K_V1), 'none', a ResNet50_Weights name (IMAGENET1K_V2: torchvision's
    newer recipe), or a torchvision ResNet-50 state dict."""
    return _build(resnet50, ResNet50_Weights, "ResNet-50", num_classes, pretrained)


def _build(make: Callable[..., ResNet], weights_enum, what: str, num_classes: int, pretrained: str) -> Backbone:
    state_dict = None  # the weights first: a failed download or a wrong file shows before any building
    if pretrained == "imagenet":
        state_dict = download_weights(weights_enum.IMAGENET1K_V1, what)
    elif pretrained in weights_enum.__members__:
        state_dict = download_weights(weights_enum[pretrained], what)
    elif is_weights_name(pretrained):
        raise UserError(f"--pretrained {pretrained}: torchvision has no such {what} weights; give one of "
                        f"{', '.join(weights_enum.__members__)} ('imagenet' is IMAGENET1K_V1), 'none' or a PATH")
    elif pretrained != "none":
        state_dict = read_state_dict(pretrained, f"a torchvision {what} state dict")
    net = make(weights=None, num_classes=num_classes)
    if state_dict is not None:
        load_matching(net, state_dict, pretrained, "layer1.", new_layers=("fc.",))
    dim = net.fc.in_features
    # torchvision flattens the pooled features before `fc`: without it, the net is G_f.
    classifier, net.fc = net.fc, nn.Identity()
    return Backbone(features=net, classifier=classifier, dim=dim,
                    input=InputSpec(size=224, min_size=32, normalization="imagenet"),
                    make_discriminator=lambda in_features: nn.Linear(in_features, 2))

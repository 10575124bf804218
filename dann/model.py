"""The DANN AlexNet: G_f (features), G_y (label classifier), G_d (domain discriminator).

Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015.
G_f = torchvision AlexNet `features` + `avgpool`; G_y = its `classifier` with a 7-way last
layer; G_d = a copy of the classifier's architecture with 2 outputs, behind a gradient
reversal layer. `model(x)` gives class logits, `model(x, alpha)` domain logits.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from einops import rearrange
from torch import nn
from torchvision.models import AlexNet_Weights, alexnet

from dann.errors import UserError


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


class DANN(nn.Module):
    """The DANN routing over three parts a subclass defines: `embed` (G_f), `classifier`
    (G_y) and `discriminator` (G_d, or None for a source-only model)."""

    def forward(self, x: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        """alpha None: class logits from G_y. alpha a number: domain logits from G_d(R_alpha(G_f(x)))."""
        features = self.embed(x)
        if alpha is None:
            return self.classifier(features)
        return self.discriminator(grad_reverse(features, alpha))


class DANNAlexNet(DANN):
    def __init__(self, num_classes: int = 7, num_domains: int = 2, discriminator: bool = True):
        """discriminator=False leaves G_d out (the source-only baseline trains no G_d)."""
        super().__init__()
        net = alexnet(weights=None)
        self.features = net.features  # G_f, with avgpool
        self.avgpool = net.avgpool
        self.classifier = net.classifier  # G_y
        self.classifier[6] = nn.Linear(4096, num_classes)
        self.discriminator = None
        if discriminator:
            self.discriminator = copy.deepcopy(net.classifier)  # G_d: same architecture
            self.discriminator[6] = nn.Linear(4096, num_domains)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """G_f: images (B, 3, 224, 224) -> features (B, 9216)."""
        return rearrange(self.avgpool(self.features(x)), "b c h w -> b (c h w)")


def copy_classifier_into_discriminator(model: DANNAlexNet) -> None:
    """fc6 and fc7 of G_d := those of G_y, so both branches start identical below the last layer."""
    if model.discriminator is None:
        return
    for i in (1, 4):
        model.discriminator[i].load_state_dict(model.classifier[i].state_dict())


def load_alexnet_weights(model: DANNAlexNet, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a torchvision AlexNet state dict (1000-way ImageNet head dropped), fill G_d."""
    own = model.state_dict()
    usable = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("features.") for k in usable):
        raise UserError("the pretrained file holds no AlexNet `features.*` weights; "
                        "give a torchvision AlexNet state dict, or --pretrained none")
    model.load_state_dict(usable, strict=False)
    copy_classifier_into_discriminator(model)


def build_model(pretrained: str, num_classes: int = 7, discriminator: bool = True) -> DANNAlexNet:
    """pretrained: 'imagenet' (torchvision download), 'none', or a path to an AlexNet state dict."""
    model = DANNAlexNet(num_classes, discriminator=discriminator)
    if pretrained == "none":
        return model
    if pretrained == "imagenet":
        try:
            state_dict = AlexNet_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as e:  # URLError, HTTPError, timeouts, a corrupt download
            raise UserError(f"downloading the ImageNet AlexNet weights failed ({type(e).__name__}: {e}); "
                            f"pass --pretrained PATH (a torchvision AlexNet state dict) "
                            f"or --pretrained none") from None
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise UserError(f"--pretrained {pretrained}: no such file; give 'imagenet', 'none' "
                            f"or the path of an AlexNet state dict")
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"--pretrained {pretrained}: not a loadable state dict ({e}); "
                            f"save one with torch.save(model.state_dict(), PATH)") from None
        if not isinstance(state_dict, dict):
            raise UserError(f"--pretrained {pretrained} holds a {type(state_dict).__name__}, "
                            f"not a state dict; save one with torch.save(model.state_dict(), PATH)")
    load_alexnet_weights(model, state_dict)
    return model

"""The DANN paper's network for digits (Ganin et al., JMLR 2016, MNIST -> MNIST-M), on 32x32
RGB: G_f = two conv-ReLU-maxpool blocks (B, 1200), G_y = a 100-100 MLP, and its own domain
classifier G_d = a 100-unit MLP, which is what `--discriminator copy` means for this backbone.

`lenet_bn`: the same network with the batch norm and dropout that public DANN ports add on
digits (e.g. github.com/fungtion/DANN, which also widens the convolutions to 64 and 50
channels; the paper's 32 and 48 are kept here: half the compute, for the CPU benchmark).
"""
from __future__ import annotations

from collections import OrderedDict

from einops.layers.torch import Rearrange
from torch import nn

from dann.backbones import Backbone, InputSpec, load_matching, read_state_dict
from dann.errors import UserError


def lenet_features() -> nn.Sequential:
    """G_f: images (B, 3, 32, 32) -> features (B, 1200); other sizes would change the 1200."""
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 32, 5), relu1=nn.ReLU(inplace=True), pool1=nn.MaxPool2d(2),  # (B, 32, 14, 14)
        conv2=nn.Conv2d(32, 48, 5), relu2=nn.ReLU(inplace=True), pool2=nn.MaxPool2d(2),  # (B, 48, 5, 5)
        flatten=Rearrange("b c h w -> b (c h w)"),  # (B, 1200)
    ))


def lenet_classifier(num_classes: int) -> nn.Sequential:
    """G_y: features (B, 1200) -> class logits (B, num_classes)."""
    return nn.Sequential(OrderedDict(
        fc1=nn.Linear(1200, 100), relu1=nn.ReLU(inplace=True),
        fc2=nn.Linear(100, 100), relu2=nn.ReLU(inplace=True),
        fc3=nn.Linear(100, num_classes),
    ))


def lenet_discriminator(in_features: int) -> nn.Sequential:
    """The paper's G_d for digits: (B, in_features) -> 2 domain logits (the paper: 1 sigmoid unit)."""
    return nn.Sequential(nn.Linear(in_features, 100), nn.ReLU(inplace=True), nn.Linear(100, 2))


def lenet_bn_features() -> nn.Sequential:
    """G_f of lenet_bn: images (B, 3, 32, 32) -> features (B, 1200)."""
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 32, 5), bn1=nn.BatchNorm2d(32), pool1=nn.MaxPool2d(2), relu1=nn.ReLU(inplace=True),
        conv2=nn.Conv2d(32, 48, 5), bn2=nn.BatchNorm2d(48), drop=nn.Dropout2d(0.5), pool2=nn.MaxPool2d(2),
        relu2=nn.ReLU(inplace=True),  # (B, 48, 5, 5)
        flatten=Rearrange("b c h w -> b (c h w)"),  # (B, 1200)
    ))


def lenet_bn_classifier(num_classes: int) -> nn.Sequential:
    """G_y of lenet_bn: features (B, 1200) -> class logits (B, num_classes)."""
    return nn.Sequential(OrderedDict(
        fc1=nn.Linear(1200, 100), bn1=nn.BatchNorm1d(100), relu1=nn.ReLU(inplace=True), drop=nn.Dropout(0.5),
        fc2=nn.Linear(100, 100), bn2=nn.BatchNorm1d(100), relu2=nn.ReLU(inplace=True),
        fc3=nn.Linear(100, num_classes),
    ))


def lenet_bn_discriminator(in_features: int) -> nn.Sequential:
    """G_d of lenet_bn: (B, in_features) -> 100 (batch norm) -> 2 domain logits."""
    return nn.Sequential(nn.Linear(in_features, 100), nn.BatchNorm1d(100), nn.ReLU(inplace=True), nn.Linear(100, 2))


def build(num_classes: int, pretrained: str) -> Backbone:
    """pretrained: 'none', or the PATH of a state dict of this network (keys `features.*`,
    `classifier.*`, as a trained model's state dict holds them)."""
    return _build("lenet", lenet_features(), lenet_classifier(num_classes), 1200, lenet_discriminator, pretrained)


def build_bn(num_classes: int, pretrained: str) -> Backbone:
    """lenet_bn; pretrained as for lenet."""
    return _build("lenet_bn", lenet_bn_features(), lenet_bn_classifier(num_classes), 1200,
                  lenet_bn_discriminator, pretrained)


def _build(name: str, features: nn.Module, classifier: nn.Module, dim: int, discriminator, pretrained: str):
    if pretrained == "imagenet":
        raise UserError(f"--pretrained imagenet: {name} has no ImageNet weights; pass --pretrained none "
                        f"(or the PATH of a {name} state dict)")
    net = nn.Sequential(OrderedDict(features=features, classifier=classifier))
    if pretrained != "none":
        state_dict = read_state_dict(pretrained, f"a {name} state dict")
        load_matching(net, state_dict, pretrained, "features.", new_layers=("classifier.fc3.",))
    return Backbone(features=net.features, classifier=net.classifier, dim=dim,
                    input=InputSpec(size=32, min_size=32, normalization="domain"),
                    make_discriminator=discriminator)

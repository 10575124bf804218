"""The first homework's AlexNet (torchvision's): G_f = `features` + `avgpool`, G_y = its
`classifier` with a num_classes-way last layer, and the `copy` discriminator G_d = the
classifier's architecture with 2 outputs and fc6/fc7 copied from G_y (Ganin & Lempitsky 2015).
"""
from __future__ import annotations

import copy

from einops import rearrange
from torch import nn
from torchvision.models import AlexNet_Weights, alexnet

from dann.backbones import Backbone, InputSpec, download_weights, load_matching, read_state_dict


class AlexNetFeatures(nn.Module):
    """G_f: images (B, 3, 224, 224) -> features (B, 9216)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.features, self.avgpool = net.features, net.avgpool

    def forward(self, x):
        return rearrange(self.avgpool(self.features(x)), "b c h w -> b (c h w)")


def copy_classifier(classifier: nn.Sequential, in_features: int, num_outputs: int = 2) -> nn.Sequential:
    """G_y's architecture and weights with `num_outputs` outputs; fc6 is copied only when
    `in_features` is G_y's own input size (9216), else it is a new layer of that input size."""
    head = copy.deepcopy(classifier)
    head[6] = nn.Linear(head[6].in_features, num_outputs)
    if in_features != head[1].in_features:
        head[1] = nn.Linear(in_features, head[1].out_features)
    return head


def build(num_classes: int, pretrained: str) -> Backbone:
    """pretrained: 'imagenet' (torchvision download), 'none', or a torchvision AlexNet state dict."""
    net = alexnet(weights=None)
    net.classifier[6] = nn.Linear(4096, num_classes)
    if pretrained != "none":
        state_dict = (download_weights(AlexNet_Weights.IMAGENET1K_V1, "AlexNet") if pretrained == "imagenet"
                      else read_state_dict(pretrained, "a torchvision AlexNet state dict"))
        load_matching(net, state_dict, pretrained, "features.", new_layers=("classifier.6.",))
    return Backbone(features=AlexNetFeatures(net), classifier=net.classifier, dim=9216,
                    input=InputSpec(size=224, min_size=63),
                    make_discriminator=lambda in_features: copy_classifier(net.classifier, in_features),
                    make_head=lambda outputs: copy_classifier(net.classifier, 9216, outputs))

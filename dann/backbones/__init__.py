"""Backbones: a feature extractor G_f and the classifier G_y that sits on its features.

A backbone plug-in is a function `build(num_classes, pretrained) -> Backbone`, registered
in `dann/plugins.py`. It declares the input it expects (`InputSpec`), and builds its own
domain discriminator for `--discriminator copy` (`make_discriminator`). `build` adds what
every backbone can have (--bottleneck_dim). Pretrained weights load here, with one clear
line for every way a weights file can be wrong.
"""
from __future__ import annotations

import copy
import dataclasses
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from dann import plugins
from dann.data import IMAGENET_MEAN, IMAGENET_STD, InputSpec  # noqa: F401 (the backbones' import)
from dann.errors import UserError, warn

@dataclass
class Backbone:
    features: nn.Module  # G_f: images (B, 3, S, S) -> features (B, dim)
    classifier: nn.Module  # G_y: (B, dim) -> class logits (B, num_classes)
    dim: int
    input: InputSpec
    # The backbone's own G_d for inputs of a given size -> 2 domain logits (--discriminator copy).
    make_discriminator: Callable[[int], nn.Module]
    # DSN's shared decoder from codes of size `dim` to a reconstruction of the input; None:
    # DSN's default image decoder (dann/methods/dsn.py). Backbones of non-image inputs set it.
    make_decoder: Callable[[int], nn.Module] | None = None
    # The part of G_f that pretrained weights load into (trained at --backbone_lr_mult):
    # all of G_f unless a bottleneck was added.
    body: nn.Module | None = None
    # Another head of G_y's architecture with a given number of outputs (MCD's second
    # classifier, MDD's adversarial one); None: G_y's architecture, freshly initialized.
    make_head: Callable[[int], nn.Module] | None = None

    def __post_init__(self):
        if self.body is None:
            self.body = self.features

    def new_head(self, num_outputs: int) -> nn.Module:
        """A head on G_f's features like G_y, with `num_outputs` outputs (pretrained layers copied
        where the backbone says so, the rest newly initialized)."""
        if self.make_head is not None:
            return self.make_head(num_outputs)
        head = copy.deepcopy(self.classifier)
        last = [name for name, m in head.named_modules() if isinstance(m, nn.Linear)][-1]
        for module in head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        if head.get_submodule(last).out_features != num_outputs:
            old = head.get_submodule(last)
            new = nn.Linear(old.in_features, num_outputs)
            if last:
                parent, _, child = last.rpartition(".")
                setattr(head.get_submodule(parent) if parent else head, child, new)
            else:
                head = new
        return head


def build(name: str, num_classes: int, pretrained: str, bottleneck_dim: int = 0) -> Backbone:
    """The backbone plug-in `name` for num_classes with `pretrained` weights, and a bottleneck
    of `bottleneck_dim` features if > 0."""
    backbone = plugins.load(plugins.BACKBONES, name)(num_classes, pretrained)
    return with_bottleneck(backbone, bottleneck_dim, num_classes) if bottleneck_dim else backbone


def from_config(config, num_classes: int) -> Backbone:
    """What a method builds: --backbone, --pretrained, --bottleneck_dim."""
    return build(config.backbone, num_classes, config.pretrained, getattr(config.backbone_hp, "bottleneck_dim", 0))


def with_bottleneck(backbone: Backbone, size: int, num_classes: int) -> Backbone:
    """G_f followed by Linear-BatchNorm-ReLU to `size` features, and a linear G_y on them
    (TLlib's ImageClassifier). The backbone's own G_y is dropped; G_d takes `size` inputs."""
    bottleneck = nn.Sequential(nn.Linear(backbone.dim, size), nn.BatchNorm1d(size), nn.ReLU(inplace=True))
    features = nn.Sequential(OrderedDict(body=backbone.features, bottleneck=bottleneck))  # (B, size)
    return dataclasses.replace(backbone, features=features, classifier=nn.Linear(size, num_classes), dim=size,
                               body=backbone.features, make_head=lambda outputs: nn.Linear(size, outputs))


def read_state_dict(path: str, what: str) -> dict[str, torch.Tensor]:
    """A state dict saved with torch.save, read without running any code it may hold."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--pretrained {path}: no such file; give 'imagenet', 'none' or the path of {what}")
    try:
        state_dict = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" not in str(e):  # not a pickle of objects: junk or a damaged file
            raise UserError(f"--pretrained {path}: not a loadable state dict (not written by torch.save, "
                            f"or damaged); save one with torch.save(model.state_dict(), PATH)") from None
        raise UserError(f"--pretrained {path}: refused, the file holds Python objects besides tensors "
                        f"(loading it could run code); save only the weights: "
                        f"torch.save(model.state_dict(), PATH)") from None
    except Exception as e:  # not a torch file, truncated, ...
        raise UserError(f"--pretrained {path}: not a loadable state dict ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); save one with "
                        f"torch.save(model.state_dict(), PATH)") from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise UserError(f"--pretrained {path} holds a {type(state_dict).__name__}, not a state dict of "
                        f"tensors; save one with torch.save(model.state_dict(), PATH)")
    return state_dict


def is_weights_name(pretrained: str) -> bool:
    """Whether --pretrained names weights of a registry (torchvision's IMAGENET1K_V2, ...) rather
    than a file: a name in capitals that is no file."""
    return re.fullmatch(r"[A-Z][A-Z0-9_]*", pretrained) is not None and not Path(pretrained).is_file()


def download_weights(weights, what: str) -> dict[str, torch.Tensor]:
    """torchvision `weights` (e.g. AlexNet_Weights.IMAGENET1K_V1), from torch's cache or the
    internet; an unreachable server is reported in seconds, in one line."""
    from dann.downloads import require_online

    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    fix = "pass --pretrained PATH (a state dict saved on a machine with internet) or --pretrained none"
    if not cached.is_file():
        require_online(f"the ImageNet {what} weights", weights.url, fix)
    try:
        return weights.get_state_dict(progress=False)
    except Exception as e:  # HTTP errors, a corrupt download
        raise UserError(f"downloading the ImageNet {what} weights failed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); {fix}") from None


def load_matching(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str,
                  required_prefix: str, new_layers: tuple[str, ...] = ()) -> None:
    """Load the tensors of `state_dict` whose names and shapes match `module`; name those left out.

    `new_layers`: name prefixes of layers the file is not expected to fit (a new 7-way head
    in place of ImageNet's 1000-way one), not worth a warning. Refuses a file with nothing
    under `required_prefix` (not weights of this network).
    """
    own = module.state_dict()
    usable = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith(required_prefix) for k in usable):
        raise UserError(f"--pretrained {source}: holds no `{required_prefix}*` tensors of the right "
                        f"shapes; is it a state dict of this backbone? (or use --pretrained none)")
    wrong_shape = [k for k, v in state_dict.items()
                   if k in own and own[k].shape != v.shape and not k.startswith(new_layers)]
    missing = [k for k in own if k not in state_dict and not k.startswith(new_layers)]
    unused = [k for k in state_dict if k not in own]
    if wrong_shape or missing:
        warn(f"--pretrained {source}: not loaded: "
             + "; ".join(part for part in (
                 f"wrong shape {', '.join(f'{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}' for k in wrong_shape)}"
                 if wrong_shape else "",
                 f"absent from the file {', '.join(missing)}" if missing else "",
                 f"(and {len(unused)} tensors of the file not in the model)" if unused else "") if part)
             + "; those keep their random initialization")
    module.load_state_dict(usable, strict=False)

"""Any model of timm (pytorch-image-models) as a backbone: `--backbone timm:<name>`, e.g.
timm:resnet50, timm:vit_small_patch16_224, timm:convnext_tiny (a tag picks its weights:
timm:resnet50.tv2_in1k). G_f = the model without its head, giving timm's pooled features;
G_y and the `copy` discriminator = one Linear, as for the ResNets. The input (size, mean,
std) is the model's own data config; models of a fixed input size (ViTs) take only that size.
"""
from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from dann.backbones import Backbone, InputSpec, is_weights_name, load_matching, read_state_dict
from dann.errors import UserError


def build(name: str, num_classes: int, pretrained: str) -> Backbone:
    """pretrained: 'imagenet' (timm's default weights of `name`, or those of its tag, from the
    Hugging Face Hub), 'none', or the PATH of a state dict of this model (torch.save, or a
    .safetensors file such as the Hub's model.safetensors)."""
    timm = import_timm(name)
    cfg = pretrained_cfg(timm, name)
    state_dict = None  # the weights first: a failed download or a wrong file shows before any building
    if pretrained == "imagenet":
        require_weights(name, cfg)
    elif is_weights_name(pretrained):
        architecture = name.partition(".")[0]
        raise UserError(f"--pretrained {pretrained}: weights names are torchvision's (--backbone resnet18, "
                        f"resnet50); a timm model's weights are chosen by a tag, --backbone timm:{architecture}.TAG "
                        f"(e.g. timm:resnet50.tv2_in1k), listed by timm.list_pretrained('{architecture}.*')")
    elif pretrained != "none":
        state_dict = read_weights(pretrained, name)
    model = create(timm, name, pretrained == "imagenet", cfg)
    if state_dict is not None:
        load_matching(model, state_dict, pretrained, stem(model, cfg))
    # Models with layers after the pooling (MobileNetV3's conv_head) return head_hidden_size features.
    dim = getattr(model, "head_hidden_size", None) or model.num_features
    return Backbone(features=model, classifier=nn.Linear(dim, num_classes), dim=dim,
                    input=input_spec(timm, model, name),
                    make_discriminator=lambda in_features: nn.Linear(in_features, 2))


def import_timm(name: str):
    try:
        import timm
        import timm.data
    except ModuleNotFoundError:
        raise UserError(f"--backbone timm:{name} needs the timm library: pip install timm") from None
    return timm


def pretrained_cfg(timm, name: str):
    """timm's description of `name` and its weights; an unknown model or tag is one line."""
    architecture, _, tag = name.partition(".")
    if not timm.is_model(architecture):
        # Names that hold it (those that start with it first), else those spelt alike.
        close = (sorted(timm.list_models(f"*{architecture}*"), key=lambda n: (not n.startswith(architecture), len(n)))
                 or difflib.get_close_matches(architecture, timm.list_models(), cutoff=0.6))[:6]
        raise UserError(f"--backbone timm:{name}: timm has no model {architecture}"
                        + (f"; close matches: {', '.join(close)}" if close else "")
                        + "; all: python -c 'import timm; print(timm.list_models())'")
    try:
        return timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # an unknown tag
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{architecture}.*")]
        raise UserError(f"--backbone timm:{name}: timm has no weights tagged {tag} for {architecture}; "
                        + (f"its tags: {', '.join(tags[:12])}{', ...' if len(tags) > 12 else ''}" if tags
                           else "it has none, use --pretrained none") + f" (or timm:{architecture}, its default)") from None


def fix(cfg) -> str:
    where = f", or the model.safetensors of huggingface.co/{cfg.hf_hub_id}" if cfg and cfg.hf_hub_id else ""
    return f"pass --pretrained PATH (a state dict saved on a machine with internet{where}) or --pretrained none"


def require_weights(name: str, cfg) -> None:
    """timm's pretrained weights of `name` can load: they are cached, or their server answers
    (an unreachable one is reported in seconds, in one line, not after the Hub client's retries)."""
    from dann.downloads import require_online

    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise UserError(f"--pretrained imagenet: timm has no pretrained weights for {name}; pass --pretrained "
                        f"none (or the PATH of a state dict of this model)")
    what = f"timm's pretrained {name} weights"
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        # A cached file loads offline: the Hub client falls back to it when the server is out of reach.
        if not any(isinstance(try_to_load_from_cache(repo, f, revision=revision or None), str) for f in files):
            require_online(what, f"{constants.ENDPOINT}/{repo}", fix(cfg))
    elif not (Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name).is_file():
        require_online(what, cfg.url, fix(cfg))


def create(timm, name: str, pretrained: bool, cfg) -> nn.Module:
    """The model without its head (num_classes=0): it returns its pooled features (B, dim)."""
    if not pretrained:
        return timm.create_model(name, num_classes=0)
    try:
        return timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as e:  # HTTP errors, a corrupt download
        raise UserError(f"--pretrained imagenet: loading timm's {name} weights failed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); {fix(cfg)}") from None


def read_weights(path: str, name: str) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file (the Hub's format) or a torch.save file; neither
    runs code from the file."""
    if not path.endswith(".safetensors") or not Path(path).is_file():
        return read_state_dict(path, f"a state dict of timm's {name} (torch.save, or .safetensors)")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as e:
        raise UserError(f"--pretrained {path}: not a loadable .safetensors file ({str(e).splitlines()[0]}); "
                        f"save one with torch.save(model.state_dict(), PATH)") from None


def stem(model: nn.Module, cfg) -> str:
    """The name prefix of the model's first layer: a file without it holds no weights of this model."""
    if cfg is not None and cfg.first_conv and any(k.startswith(cfg.first_conv + ".") for k in model.state_dict()):
        return cfg.first_conv + "."
    return next(iter(model.state_dict())).split(".")[0]


def input_spec(timm, model: nn.Module, name: str) -> InputSpec:
    """Size, mean and std from timm's data config of the model; the smallest input it takes."""
    config = timm.data.resolve_model_data_config(model)
    _, height, width = config["input_size"]
    # A fixed size: timm says so, or a patch embedding checks it (a ViT's position embeddings).
    fixed = (model.pretrained_cfg.get("fixed_input_size", False)
             or any(getattr(m, "strict_img_size", False) for m in model.modules()))
    if fixed and height != width:
        raise UserError(f"--backbone timm:{name} takes only {height}x{width} inputs, and the images here are "
                        f"square; choose another model")
    size = max(height, width)
    smallest = model.pretrained_cfg.get("min_input_size")
    min_size = size if fixed else max(smallest[-2:]) if smallest else 32
    return InputSpec(size=size, min_size=min_size, normalization="imagenet",
                     mean=tuple(config["mean"]), std=tuple(config["std"]))

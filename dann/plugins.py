"""Every plug-in by name: methods, backbones, discriminators and datasets.

Adding one is a new file (or class) plus one line here; the training loop never changes.
A name maps to 'module:attribute', imported on first use, so that parsing flags (and
`--help`) does not load torch. Tests may register a callable directly.
"""
from __future__ import annotations

import importlib

# UDA methods (dann/methods/): build their networks, give step() and predict().
METHODS = {
    "baseline": "dann.methods.source_only:SourceOnly",  # train_baseline.py: no adaptation
    "dann": "dann.methods.dann:DANN",
    "cdan": "dann.methods.cdan:CDAN",
    "dsn": "dann.methods.dsn:DSN",
}
# Feature extractors G_f with their classifier G_y (dann/backbones/): build(num_classes, pretrained).
BACKBONES = {
    "alexnet": "dann.backbones.alexnet:build",
    "alexnet_caffe": "dann.backbones.alexnet_caffe:build",
    "resnet18": "dann.backbones.resnet:build_resnet18",
    "resnet50": "dann.backbones.resnet:build_resnet50",
    "lenet": "dann.backbones.lenet:build",
}
# Domain discriminators G_d (dann/discriminators.py): build(backbone, in_features).
DISCRIMINATORS = {
    "copy": "dann.discriminators:copy_of_classifier",
    "paper": "dann.discriminators:paper_mlp",
}
# Datasets (dann/datasets/): their domains, classes and images.
DATASETS = {
    "pacs": "dann.datasets.pacs:Pacs",
    "folder": "dann.datasets.folder:Folder",
    "digits": "dann.datasets.digits:Digits",
    "digits_shipped": "dann.datasets.shipped:ShippedDigits",
}


def load(registry: dict, name: str):
    """The plug-in registered as `name` (a class or function)."""
    target = registry[name]
    if not isinstance(target, str):
        return target
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)

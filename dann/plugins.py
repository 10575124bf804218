"""Every plug-in by name: methods, backbones, discriminators, datasets and model-selection rules.

Adding one is a new file (or class) plus one line here; the training loop never changes.
A line names the implementation as 'module:attribute' (imported on first use, so that
parsing flags and `--help` load no torch) and the plug-in's hyperparameters
(dann/hparams.py), from which its flags are made. Tests may register a callable directly.
"""
from __future__ import annotations

import importlib
from typing import NamedTuple

from dann import hparams


class Plugin(NamedTuple):
    target: object  # 'module:attribute', or the class / function itself
    hparams: type[hparams.Hparams] = hparams.Hparams  # its own flags (none by default)


BASELINE = "baseline"  # train_baseline.py's method; train_dann.py takes every other one
# UDA methods (dann/methods/): build their networks, give step() and predict().
METHODS = {
    BASELINE: Plugin("dann.methods.source_only:SourceOnly"),
    "dann": Plugin("dann.methods.dann:DANN", hparams.DANN),
    "cdan": Plugin("dann.methods.cdan:CDAN", hparams.CDAN),
    "dsn": Plugin("dann.methods.dsn:DSN", hparams.DSN),
    "mcc": Plugin("dann.methods.mcc:MCC", hparams.MCC),
    "adabn": Plugin("dann.methods.adabn:AdaBN"),
    "pseudo_labels": Plugin("dann.methods.pseudo_labels:PseudoLabels", hparams.PseudoLabels),
}
# Feature extractors G_f with their classifier G_y (dann/backbones/): build(num_classes, pretrained).
BACKBONES = {
    "alexnet": Plugin("dann.backbones.alexnet:build", hparams.Backbone),
    "alexnet_caffe": Plugin("dann.backbones.alexnet_caffe:build", hparams.Backbone),
    "resnet18": Plugin("dann.backbones.resnet:build_resnet18", hparams.Backbone),
    "resnet50": Plugin("dann.backbones.resnet:build_resnet50", hparams.Backbone),
    "lenet": Plugin("dann.backbones.lenet:build", hparams.Backbone),
    "lenet_bn": Plugin("dann.backbones.lenet:build_bn", hparams.Backbone),
}
# Domain discriminators G_d (dann/discriminators.py): build(backbone, in_features, hparams).
DISCRIMINATORS = {
    "copy": Plugin("dann.discriminators:copy_of_classifier"),
    "paper": Plugin("dann.discriminators:paper_mlp"),
    "bn_mlp": Plugin("dann.discriminators:batch_norm_mlp", hparams.BatchNormMLP),
}
# Datasets (dann/datasets/): their domains, classes and images.
DATASETS = {
    "pacs": Plugin("dann.datasets.pacs:Pacs"),
    "folder": Plugin("dann.datasets.folder:Folder"),
    "digits": Plugin("dann.datasets.digits:Digits"),
    "digits_shipped": Plugin("dann.datasets.shipped:ShippedDigits"),
    "office31": Plugin("dann.datasets.office:Office31"),
    "office_home": Plugin("dann.datasets.office:OfficeHome"),
    "visda2017": Plugin("dann.datasets.visda:VisDA2017"),
    "domainnet": Plugin("dann.datasets.domainnet:DomainNet"),
}


class Rule(NamedTuple):
    """A model-selection rule: the function scoring a trained model without target labels, which
    way is better, and whether it trains a model of its own (then only at the end of a run)."""
    target: object  # 'module:attribute', or the function itself: score(evidence) -> float
    goal: str  # 'maximize' | 'minimize'
    trains: bool = False


# Unsupervised model selection (dann/selection.py): a score per trained model, select/<name>.
SELECTION = {
    "source_val_acc": Rule("dann.selection:source_val_accuracy", "maximize"),
    "source_val_loss": Rule("dann.selection:source_val_loss", "minimize"),
    "entropy": Rule("dann.selection:target_entropy", "minimize"),
    "snd": Rule("dann.selection:soft_neighborhood_density", "maximize"),
    "iwcv": Rule("dann.selection:iwcv", "minimize", trains=True),
    "dev": Rule("dann.selection:dev", "minimize", trains=True),
    "reverse_val": Rule("dann.selection:reverse_validation", "maximize", trains=True),
}


def entry(registry: dict, name: str) -> Plugin:
    """The registry's line for `name`. A bare class or function (a test's) takes no flags of its
    own, but a backbone always takes those every backbone has (hparams.Backbone)."""
    value = registry[name]
    if isinstance(value, (Plugin, Rule)):
        return value
    return Plugin(value, hparams.Backbone if registry is BACKBONES else hparams.Hparams)


def load(registry: dict, name: str):
    """The plug-in registered as `name` (a class or function)."""
    target = entry(registry, name).target
    if not isinstance(target, str):
        return target
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)


def hparams_of(registry: dict, name: str) -> type[hparams.Hparams]:
    """The hyperparameter dataclass of the plug-in registered as `name`."""
    return entry(registry, name).hparams


def uses_discriminator(method: str) -> bool:
    """Whether --method trains a domain discriminator (so takes --discriminator and its flags)."""
    return issubclass(hparams_of(METHODS, method), hparams.Adversarial)


def sees_target(method: str) -> bool:
    """Whether --method is an adaptation method (train_dann.py's), not the source-only baseline."""
    return method != BASELINE

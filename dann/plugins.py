"""Every plug-in by name, with its own hyperparameters: methods, backbones, discriminators,
datasets and model-selection rules.

Adding one is a new file (or class) plus its entry here: a line naming the implementation as
'module:attribute' (imported on first use, so that parsing flags and `--help` load no torch)
and, if it has hyperparameters, their dataclass just above the line (dann/hparams.py says how
to declare them); its flags, checks, sweep values and results.json keys are made from it.
Tests may register a callable directly.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import NamedTuple

from dann import hparams
from dann.hparams import Adversarial, GradientReversal, Hparams, TargetTerms, hparam

SCRIPTS = {"dann": "train_dann.py", "baseline": "train_baseline.py"}  # the entry points, by short name


class Plugin(NamedTuple):
    target: object  # 'module:attribute', or the class / function itself
    hparams: type[Hparams] = Hparams  # its own flags (none by default)
    script: str = "dann"  # methods: the entry point that trains it (a key of SCRIPTS)
    args: tuple = ()  # leading arguments the target is called with (timm's model name)


# ---------------------------------------------------------------------------- methods
# UDA methods (dann/methods/): build their networks, give step() (or update()) and predict().
# A method whose hyperparameters derive from hparams.Adversarial trains a discriminator G_d
# (and takes --discriminator); from hparams.TargetTerms, it takes the target terms.

@dataclass(frozen=True)
class DANNHparams(Adversarial):
    classify_target: bool = hparam(True, "also run G_y on the target batch, in training mode, so that its batch-norm "
                                          "statistics follow the target too (TLlib's DANN does, in its joint pass)")


@dataclass(frozen=True)
class CDANHparams(Adversarial):
    entropy_conditioning: bool = hparam(False, "CDAN+E: weight each example's domain loss by 1 + exp(-H(g))",
                                        sweep=[False, True])
    cdan_random_dim: int = hparam(1024, "size of the randomized multilinear map, used when features x classes "
                                        "exceeds 4096", check=">0", architecture=True)


@dataclass(frozen=True)
class DSNHparams(Adversarial):
    dsn_recon: float = hparam(0.15, "weight of L_recon", check=">=0")
    dsn_difference: float = hparam(0.075, "weight of L_difference", check=">=0")
    dsn_similarity: float = hparam(0.25, "weight of L_similarity (the domain loss through gradient reversal)",
                                   check=">=0", sweep=[0.25, 1.0, 3.0])
    dsn_decoder_width: int = hparam(256, "channels of the shared decoder's first feature map (halved at each "
                                         "upsampling); 64 makes it about 16x cheaper on digits", check=">0",
                                    architecture=True)


@dataclass(frozen=True)
class MCCHparams(TargetTerms):
    mcc_weight: float = hparam(1.0, "weight of the Minimum Class Confusion loss on target predictions",
                               check=">=0", sweep=[0.3, 1.0, 3.0, 10.0])


@dataclass(frozen=True)
class PseudoLabelsHparams(TargetTerms):
    pl_threshold: float = hparam(0.95, "confidence a target prediction needs to become a pseudo-label",
                                 check="0..1", sweep=[0.7, 0.8, 0.9, 0.95])
    pl_weight: float = hparam(1.0, "weight of the pseudo-label loss (ramped up like alpha's dann schedule)",
                              check=">=0", sweep=[0.3, 1.0, 3.0])


@dataclass(frozen=True)
class MDDHparams(GradientReversal):
    alpha: float = hparam(0.1, "gradient reversal weight in front of F' (the largest value under the schedule)",
                          check=">=0", sweep=[0.03, 0.1, 0.3])
    alpha_schedule: str = hparam("warm_start", "as DANN's (see --method dann --help); TLlib's MDD: warm_start",
                                 choices=("constant", "dann", "warm_start"), sweep=["dann", "warm_start"])
    mdd_margin: float = hparam(4.0, "the margin gamma: the weight of F''s agreement with F on the source",
                               check=">0", sweep=[2.0, 4.0])
    mdd_weight: float = hparam(1.0, "weight of the disparity term", check=">=0", sweep=[0.3, 1.0, 3.0])


@dataclass(frozen=True)
class MCDHparams(TargetTerms):
    mcd_weight: float = hparam(1.0, "weight of the classifier discrepancy in steps B and C", check=">=0",
                               sweep=[0.3, 1.0, 3.0])
    mcd_steps: int = hparam(4, "step C's updates of G_f per iteration (the paper's n: 4 on digits)", check=">0",
                            sweep=[1, 2, 4])


@dataclass(frozen=True)
class DANHparams(TargetTerms):
    dan_weight: float = hparam(1.0, "weight of the MMD term", check=">=0", sweep=[0.3, 1.0, 3.0])
    dan_joint: bool = hparam(False, "JAN: the joint MMD of the features and the class predictions", sweep=[False, True])


@dataclass(frozen=True)
class CORALHparams(TargetTerms):
    coral_weight: float = hparam(1.0, "weight of the CORAL loss", check=">=0", sweep=[1.0, 10.0, 100.0])
    coral_mean_weight: float = hparam(0.0, "weight of the squared difference of the feature means, averaged over "
                                           "the features (DomainBed's CORAL adds it)", check=">=0", sweep=[0.0, 1.0])


@dataclass(frozen=True)
class FixMatchHparams(TargetTerms):
    fixmatch_threshold: float = hparam(0.95, "confidence tau the weak view's prediction needs to teach the strong "
                                             "view", check="0..1", sweep=[0.8, 0.9, 0.95])
    fixmatch_weight: float = hparam(1.0, "weight of the consistency loss (lambda_u)", check=">=0", sweep=[0.3, 1.0, 3.0])
    fixmatch_align: bool = hparam(False, "AdaMatch's distribution alignment: the weak view's probabilities times the "
                                         "source batch's mean prediction over the target batch's, renormalized, "
                                         "before the threshold (pseudo-labels keep the source's class proportions)",
                                  sweep=[False, True])
    fixmatch_shift: float = hparam(0.125, "largest shift of the target's weak view (which the strong view starts "
                                          "from), as a share of the image side: FixMatch's 0.125; 0: none, the "
                                          "view the source is trained on (digits)", check="0..0.5",
                                   sweep=[0.0, 0.125])
    fixmatch_ramp: str = hparam("constant", "schedule of the consistency weight over the run: 'constant' (FixMatch's) "
                                            "or 'dann' (w (2 / (1 + exp(-10 p)) - 1), as --method pseudo_labels)",
                                choices=("constant", "dann"), sweep=["constant", "dann"])


@dataclass(frozen=True)
class SHOTHparams(Hparams):
    shot_source_share: float = hparam(0.5, "share of the run spent training the source model (0 with "
                                           "--source_model: adaptation only)", check="0..1", sweep=[0.3, 0.5])
    shot_smoothing: float = hparam(0.1, "label smoothing epsilon of the source training", check="0..1")
    shot_im_weight: float = hparam(1.0, "weight of the information maximization loss", check=">=0")
    shot_pl_weight: float = hparam(0.3, "weight beta of the clustering pseudo-labels' cross-entropy", check=">=0",
                                   sweep=[0.1, 0.3, 1.0])


METHODS = {
    "baseline": Plugin("dann.methods.source_only:SourceOnly", script="baseline"),
    "dann": Plugin("dann.methods.dann:DANN", DANNHparams),
    "cdan": Plugin("dann.methods.cdan:CDAN", CDANHparams),
    "dsn": Plugin("dann.methods.dsn:DSN", DSNHparams),
    "mcc": Plugin("dann.methods.mcc:MCC", MCCHparams),
    "adabn": Plugin("dann.methods.adabn:AdaBN"),
    "pseudo_labels": Plugin("dann.methods.pseudo_labels:PseudoLabels", PseudoLabelsHparams),
    "mdd": Plugin("dann.methods.mdd:MDD", MDDHparams),
    "mcd": Plugin("dann.methods.mcd:MCD", MCDHparams),
    "dan": Plugin("dann.methods.dan:DAN", DANHparams),
    "coral": Plugin("dann.methods.coral:CORAL", CORALHparams),
    "fixmatch": Plugin("dann.methods.fixmatch:FixMatch", FixMatchHparams),
    "shot": Plugin("dann.methods.shot:SHOT", SHOTHparams),
}

# ---------------------------------------------------------------------------- backbones
TIMM = "timm:"  # --backbone timm:<model>: any model of the timm library (dann/backbones/timm_models.py)


class Backbones(dict):
    """The backbone registry; it also holds `timm:<model>` for every model name, which timm
    checks when the backbone is built (so that parsing flags and `--help` import no timm)."""

    def __contains__(self, name) -> bool:
        return super().__contains__(name) or (isinstance(name, str) and name.startswith(TIMM) and name != TIMM)

    def __missing__(self, name: str) -> Plugin:
        if name not in self:
            raise KeyError(name)
        return Plugin("dann.backbones.timm_models:build", hparams.Backbone, args=(name.removeprefix(TIMM),))


# Feature extractors G_f with their classifier G_y (dann/backbones/): build(num_classes, pretrained).
BACKBONES = Backbones({
    "alexnet": Plugin("dann.backbones.alexnet:build", hparams.Backbone),
    "alexnet_caffe": Plugin("dann.backbones.alexnet_caffe:build", hparams.Backbone),
    "resnet18": Plugin("dann.backbones.resnet:build_resnet18", hparams.Backbone),
    "resnet50": Plugin("dann.backbones.resnet:build_resnet50", hparams.Backbone),
    "lenet": Plugin("dann.backbones.lenet:build", hparams.Backbone),
    "lenet_bn": Plugin("dann.backbones.lenet:build_bn", hparams.Backbone),
})

# ---------------------------------------------------------------------------- discriminators
# Domain discriminators G_d (dann/discriminators.py): build(backbone, in_features, hparams).

@dataclass(frozen=True)
class BatchNormMLPHparams(Hparams):
    discriminator_width: int = hparam(1024, "hidden units of each of the two Linear-BN-ReLU layers", check=">0",
                                      architecture=True)


DISCRIMINATORS = {
    "copy": Plugin("dann.discriminators:copy_of_classifier"),
    "paper": Plugin("dann.discriminators:paper_mlp"),
    "bn_mlp": Plugin("dann.discriminators:batch_norm_mlp", BatchNormMLPHparams),
}

# ---------------------------------------------------------------------------- datasets
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


# ---------------------------------------------------------------------------- model selection

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


# ---------------------------------------------------------------------------- reading the registry

def entry(registry: dict, name: str) -> Plugin:
    """The registry's line for `name`. A bare class or function (a test's) takes no flags of its
    own, but a backbone always takes those every backbone has (hparams.Backbone)."""
    value = registry[name]
    if isinstance(value, (Plugin, Rule)):
        return value
    return Plugin(value, hparams.Backbone if registry is BACKBONES else Hparams)


def load(registry: dict, name: str):
    """The plug-in registered as `name` (a class or function, with its line's leading arguments)."""
    line = entry(registry, name)
    target = line.target
    if isinstance(target, str):
        module, attribute = target.split(":")
        target = getattr(importlib.import_module(module), attribute)
    args = getattr(line, "args", ())  # a Rule has none
    return functools.partial(target, *args) if args else target


def hparams_of(registry: dict, name: str) -> type[Hparams]:
    """The hyperparameter dataclass of the plug-in registered as `name`."""
    return entry(registry, name).hparams


def uses_discriminator(method: str) -> bool:
    """Whether --method trains a domain discriminator (so takes --discriminator and its flags)."""
    return issubclass(hparams_of(METHODS, method), Adversarial)


def script_of(method: str) -> str:
    """The entry point that trains --method: 'dann' (train_dann.py) or 'baseline'."""
    return entry(METHODS, method).script


def methods_of(script: str) -> list[str]:
    """The methods `script` trains, in registry order (train_baseline.py: the source-only baseline)."""
    return [name for name in METHODS if script_of(name) == script]

"""How a plug-in declares its own hyperparameters: a small frozen dataclass of `hparam` fields
(default, help line, check, the values a sweep tries), in the spirit of DomainBed's
hparams_registry.py; and the families several plug-ins share (the target terms, the
adversarial ones, what every backbone takes). Each plug-in's own dataclass sits beside its
line in dann/plugins.py. The command line, `--help`, the checks, the sweep checks, what a
checkpoint must match and results.json are generated from them (dann/config.py).

Torch-free on purpose: `--help` and the sweep checks read this file without loading torch.
A field name is the flag name, so names must not clash within one run (tests check it).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


def hparam(default, help: str, *, choices: tuple | None = None, check: str = "", sweep: list | None = None,
           architecture: bool = False):
    """A hyperparameter: its default, help line, allowed choices, a check ('>0', '>=0',
    or 'low..high' such as '0..1', both ends allowed), the values a sweep tries, and whether it
    shapes the networks (`architecture`: a checkpoint written with another value cannot be resumed)."""
    return field(default=default, metadata={"help": help, "choices": choices, "check": check, "sweep": sweep,
                                            "architecture": architecture})


@dataclass(frozen=True)
class Hparams:
    """A plug-in without hyperparameters of its own."""

    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    def values(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def architecture(cls) -> list[str]:
        """The names of the fields that shape the networks."""
        return [f.name for f in cls.fields() if f.metadata["architecture"]]

    def errors(self) -> list[str]:
        """Every value outside its check, as '--name must be ...' messages."""
        found = []
        for f in self.fields():
            value, check = getattr(self, f.name), f.metadata["check"]
            if isinstance(value, float) and not math.isfinite(value):
                continue  # reported with every other non-finite flag (dann/config.py)
            if check == ">0" and not value > 0:
                found.append(f"--{f.name} must be > 0, got {value}")
            elif check == ">=0" and not value >= 0:
                found.append(f"--{f.name} must be >= 0, got {value}")
            elif ".." in check:  # 'low..high', both included
                low, high = map(float, check.split(".."))
                if not low <= value <= high:
                    found.append(f"--{f.name} must be between {low:g} and {high:g}, got {value}")
        return found


# ---------------------------------------------------------------------------- methods

@dataclass(frozen=True)
class TargetTerms(Hparams):
    """Terms on the target predictions that any method seeing target batches can add."""
    entropy_weight: float = hparam(0.0, "weight of the target entropy term, mean H(softmax(G_y(G_f(x_t)))) "
                                        "(Grandvalet & Bengio 2004)", check=">=0", sweep=[0.0, 0.1, 0.3])
    mcc_weight: float = hparam(0.0, "weight of the Minimum Class Confusion term on target predictions "
                                    "(Jin et al., ECCV 2020)", check=">=0", sweep=[0.0, 0.3, 1.0, 3.0])
    mcc_temperature: float = hparam(2.5, "MCC's softmax temperature T", check=">0")


@dataclass(frozen=True)
class GradientReversal(TargetTerms):
    """A gradient reversal layer R_alpha between G_f and an adversarial head (DANN's G_d, MDD's F').
    Defaults: TLlib's, the digits benchmark's choice (--recipe homework: 0.1, constant)."""
    alpha: float = hparam(1.0, "gradient reversal weight (the largest value under the dann and warm_start "
                               "schedules)", check=">=0", sweep=[0.1, 0.3, 1.0])
    alpha_schedule: str = hparam("warm_start", "'constant': alpha; 'dann': alpha (2 / (1 + exp(-10 p)) - 1) over the "
                                             "run; 'warm_start': alpha (2 / (1 + exp(-i / alpha_warmup_steps)) - 1) "
                                             "over the iterations i (TLlib's)",
                                 choices=("constant", "dann", "warm_start"), sweep=["constant", "dann"])
    alpha_warmup_steps: int = hparam(1000, "warm_start's N: iterations of the ramp (at N, alpha x 0.46)", check=">0")


@dataclass(frozen=True)
class Adversarial(GradientReversal):
    """A domain discriminator G_d behind the gradient reversal layer R_alpha (DANN, CDAN, DSN)."""
    domain_loss_reduction: str = hparam("mean", "'sum': CE(G_d(f_s), 0) + CE(G_d(f_t), 1), the homework's three "
                                                "backward calls; 'mean': half of it (TLlib, DomainBed)",
                                        choices=("sum", "mean"))


# ---------------------------------------------------------------------------- backbones

@dataclass(frozen=True)
class Backbone(Hparams):
    """What every backbone takes: an optional bottleneck and G_f's learning-rate multiplier."""
    bottleneck_dim: int = hparam(0, "a Linear-BatchNorm-ReLU bottleneck of this size after G_f, with a linear "
                                    "G_y on it (0: none, G_y is the backbone's own; dann, cdan and mcc on lenet_bn "
                                    "default to 256, the digits table's chosen rows)", check=">=0", architecture=True)
    backbone_lr_mult: float = hparam(1.0, "G_f's learning rate as a multiple of --lr (0.1 is usual for "
                                          "ImageNet-pretrained backbones; 1: one rate for all, the homework)",
                                     check=">=0")

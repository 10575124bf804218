"""Every plug-in's own hyperparameters: one small dataclass per method, backbone and
discriminator, with defaults, a help line, a check and (where sweeps search it) a range,
in the spirit of DomainBed's hparams_registry.py. The command line, `--help`, the checks,
the sweep checks and results.json are generated from them (dann/config.py).

Torch-free on purpose: `--help` and the sweep checks read this file without loading torch.
A field name is the flag name, so names must not clash within one run (tests check it).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


def hparam(default, help: str, *, choices: tuple | None = None, check: str = "", sweep: list | None = None):
    """A hyperparameter: its default, help line, allowed choices, a check ('>0', '>=0',
    '0..1') and the values a sweep tries."""
    return field(default=default, metadata={"help": help, "choices": choices, "check": check, "sweep": sweep})


@dataclass(frozen=True)
class Hparams:
    """A plug-in without hyperparameters of its own."""

    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    def values(self) -> dict:
        return dataclasses.asdict(self)

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
            elif check == "0..1" and not 0 <= value <= 1:
                found.append(f"--{f.name} must be between 0 and 1, got {value}")
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
class Adversarial(TargetTerms):
    """A domain discriminator G_d behind the gradient reversal layer R_alpha (DANN, CDAN, DSN)."""
    alpha: float = hparam(0.1, "gradient reversal weight (the largest value under the dann schedule)",
                          check=">=0", sweep=[0.1, 0.3, 1.0])
    alpha_schedule: str = hparam("constant", "'constant': alpha; 'dann': alpha * (2 / (1 + exp(-10 p)) - 1)",
                                 choices=("constant", "dann"), sweep=["constant", "dann"])
    domain_loss_reduction: str = hparam("sum", "'sum': CE(G_d(f_s), 0) + CE(G_d(f_t), 1), the homework's three backward "
                                     "calls; 'mean': half of it (TLlib, DomainBed)", choices=("sum", "mean"))


@dataclass(frozen=True)
class DANN(Adversarial):
    pass


@dataclass(frozen=True)
class CDAN(Adversarial):
    entropy_conditioning: bool = hparam(False, "CDAN+E: weight each example's domain loss by 1 + exp(-H(g))",
                                        sweep=[False, True])
    cdan_random_dim: int = hparam(1024, "size of the randomized multilinear map, used when features x classes "
                                        "exceeds 4096", check=">0")


@dataclass(frozen=True)
class DSN(Adversarial):
    dsn_recon: float = hparam(0.15, "weight of L_recon", check=">=0")
    dsn_difference: float = hparam(0.075, "weight of L_difference", check=">=0")
    dsn_similarity: float = hparam(0.25, "weight of L_similarity (the domain loss through gradient reversal)",
                                   check=">=0", sweep=[0.25, 1.0, 3.0])
    dsn_decoder_width: int = hparam(256, "channels of the shared decoder's first feature map (halved at each "
                                         "upsampling); 64 makes it about 16x cheaper on digits", check=">0")


@dataclass(frozen=True)
class MCC(TargetTerms):
    mcc_weight: float = hparam(1.0, "weight of the Minimum Class Confusion loss on target predictions",
                               check=">=0", sweep=[0.3, 1.0, 3.0, 10.0])


@dataclass(frozen=True)
class PseudoLabels(TargetTerms):
    pl_threshold: float = hparam(0.95, "confidence a target prediction needs to become a pseudo-label",
                                 check="0..1", sweep=[0.7, 0.8, 0.9, 0.95])
    pl_weight: float = hparam(1.0, "weight of the pseudo-label loss (ramped up like alpha's dann schedule)",
                              check=">=0", sweep=[0.3, 1.0, 3.0])


# ---------------------------------------------------------------------------- backbones

@dataclass(frozen=True)
class Backbone(Hparams):
    """What every backbone takes: an optional bottleneck and G_f's learning-rate multiplier."""
    bottleneck_dim: int = hparam(0, "a Linear-BatchNorm-ReLU bottleneck of this size after G_f, with a linear "
                                    "G_y on it (0: none, G_y is the backbone's own)", check=">=0")
    backbone_lr_mult: float = hparam(1.0, "G_f's learning rate as a multiple of --lr (0.1 is usual for "
                                          "ImageNet-pretrained backbones; 1: one rate for all, the homework)",
                                     check=">=0")


# ---------------------------------------------------------------------------- discriminators

@dataclass(frozen=True)
class BatchNormMLP(Hparams):
    discriminator_width: int = hparam(1024, "hidden units of each of the two Linear-BN-ReLU layers", check=">0")

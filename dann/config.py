"""The run's settings: one frozen dataclass of the flags every run shares, plus the chosen
plug-ins' own hyperparameters (declared in dann/plugins.py), resolved once before anything is built.

Field names are the command-line flags and the W&B sweep parameter names, so a sweep's
`${args}` pass straight through and `tests/test_sweeps.py` can check every sweep YAML
against the parser. The parser is made for the chosen method, backbone and discriminator:
it offers their flags and refuses another plug-in's, in one line. Boolean flags take
`--flag`, `--no-flag` and `--flag=true|false` (the form W&B writes).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field

from dann import first_look, hparams, plugins, schedules

SCRIPTS = tuple(plugins.SCRIPTS)  # 'dann' (train_dann.py), 'baseline' (train_baseline.py)
ADAPT = ("dann",)  # flags of train_dann.py only
# The plug-in kinds whose hyperparameters join the flags: (config field, registry).
PLUGIN_KINDS = (("method", plugins.METHODS), ("backbone", plugins.BACKBONES),
                ("discriminator", plugins.DISCRIMINATORS))


def _flag(help: str, scripts: tuple[str, ...] = SCRIPTS, must_match: bool = False, **argparse_kwargs):
    """A dataclass field that also describes its command-line flag. must_match: a run resumed
    from a checkpoint must have the value it was written with (other data, batches or networks)."""
    return {"help": help, "scripts": scripts, "must_match": must_match, **argparse_kwargs}


# --recipe homework: the first homework's code, this project's defaults until the digits benchmark
# chose TLlib's optimizer and reversal (docs/RESULTS.md): a step lr schedule, plain momentum,
# little weight decay; for the methods with a discriminator, G_d a copy of G_y's architecture, a
# constant alpha of 0.1, the summed domain loss of its three backward calls, and (DANN) G_y never
# sees a target batch. Each entry applies where the run takes that flag.
HOMEWORK = {"lr_schedule": "step", "nesterov": False, "weight_decay": 5e-5}
HOMEWORK_ADVERSARIAL = {"discriminator": "copy", "alpha": 0.1, "alpha_schedule": "constant",
                        "domain_loss_reduction": "sum", "classify_target": False}
RECIPES = ("default", "homework")


def recipe_defaults(recipe: str, method: str, backbone: str) -> dict:
    """The flag defaults --recipe sets for a run of `method` on `backbone`. 'default': on the digits
    table's network (lenet_bn) the backbone flags of the method's chosen row there (TLlib's bottleneck
    for dann, cdan and mcc: dann/first_look.py, docs/RESULTS.md stage 7), none on other backbones,
    whose G_y stays their own (AlexNet's fc6-fc7 keep their ImageNet weights)."""
    if method not in plugins.METHODS:
        return {}
    if recipe != "homework":
        if backbone != first_look.DATA["backbone"]:
            return {}
        backbone_flags = {f.name for f in plugins.hparams_of(plugins.BACKBONES, backbone).fields()}
        return {k: v for k, v in first_look.RECIPES.get(method, {}).items() if k in backbone_flags}
    adversarial = HOMEWORK_ADVERSARIAL if plugins.uses_discriminator(method) else {}
    names = {f.name for f in plugins.hparams_of(plugins.METHODS, method).fields()} | {"discriminator"}
    return {**HOMEWORK, **{k: v for k, v in adversarial.items() if k in names}}


def plugin_kinds(method: str) -> list[tuple[str, dict]]:
    """The plug-in kinds a run of `method` takes flags from: its method and backbone, and its
    discriminator when the method trains one (plugins.uses_discriminator)."""
    return [(kind, registry) for kind, registry in PLUGIN_KINDS
            if kind != "discriminator" or plugins.uses_discriminator(method)]


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = field(default="pacs", metadata=_flag(
        "pacs | folder (any <data_root>/<domain>/<class>/<image> tree) | digits (mnist, mnist_m, "
        "svhn, usps) | digits_shipped (a CPU benchmark from data installed packages ship)",
        choices=plugins.DATASETS, must_match=True))
    source: str = field(default="", metadata=_flag(
        "source domain (labeled); default: the dataset's usual pair (pacs: photo -> art_painting)", must_match=True))
    target: str = field(default="", metadata=_flag(
        "target domain (unlabeled during adaptation, and the test set); several: a,b", must_match=True))
    data_root: str = field(default="", metadata=_flag(
        "dataset folder (default data/PACS, data/digits); only the default folder is downloaded "
        "when missing, unless --download"))
    download: bool = field(default=False, metadata=_flag(
        "download the dataset into --data_root if it is missing there"))
    train_on: str = field(default="source", metadata=_flag(
        "'target' trains on the labeled target domain (the upper bound)",
        scripts=("baseline",), choices=("source", "target"), must_match=True))
    augment: bool = field(default=False, metadata=_flag(
        "training augmentation: random crop (images larger than the network input) and "
        "horizontal flip (datasets where a flip keeps the class)", must_match=True))
    source_val: float = field(default=0.1, metadata=_flag(
        "fraction of the labeled training domain held out as a validation split, never trained on "
        "(stratified by class, the same images for every seed): what the source-side selection scores "
        "read (0: none)", must_match=True))
    data_path: str = field(default="auto", metadata=_flag(
        "'tensor': decode once, keep uint8 images on the device; 'loader': decode every "
        "epoch in DataLoader workers (folder datasets); 'auto': tensor when it fits in memory",
        choices=("auto", "tensor", "loader")))
    cache_dir: str = field(default="", metadata=_flag(
        "where decoded domains are cached (default: $XDG_CACHE_HOME/dann_pacs or ~/.cache/dann_pacs)"))
    num_workers: int = field(default=-1, metadata=_flag(
        "DataLoader workers / decode processes (-1: one per available CPU core, at most 4)"))
    # model: the plug-ins; each adds its own flags (dann/plugins.py)
    method: str = field(default="dann", metadata=_flag(
        "domain adaptation method (train_baseline.py trains the source-only baseline); "
        "`--method NAME --help` lists its own flags", scripts=ADAPT, choices=plugins.methods_of("dann"),
        must_match=True))
    backbone: str = field(default="alexnet", metadata=_flag(
        "feature extractor G_f and classifier G_y; or timm:NAME, any model of timm (pip install timm), "
        "e.g. timm:resnet50, timm:vit_small_patch16_224, timm:convnext_tiny", choices=plugins.BACKBONES,
        must_match=True))
    discriminator: str = field(default="bn_mlp", metadata=_flag(
        "G_d of the adversarial methods: 'copy' (the backbone's own: G_y's architecture with 2 outputs, "
        "fc6/fc7 copied for AlexNet), 'paper' (the DANN paper's 1024-1024-2 MLP), 'bn_mlp' (two "
        "Linear-BatchNorm-ReLU layers, TLlib's)", scripts=ADAPT, choices=plugins.DISCRIMINATORS, must_match=True))
    domain_batches: str = field(default="separate", metadata=_flag(
        "how a network with batch norm sees a step's source and target batches: 'separate' (each normalized "
        "by its own statistics) or 'joint' (concatenated, as TLlib's examples do)", choices=("separate", "joint")))
    source_model: str = field(default="", metadata=_flag(
        "start G_f and G_y from a trained model: a run folder (its model.safetensors, e.g. from train_baseline.py) "
        "or the file; SHOT then skips its source phase"))
    pretrained: str = field(default="imagenet", metadata=_flag(
        "'imagenet' (download; resnet18/50: torchvision's IMAGENET1K_V1, the weights DA papers use; "
        "timm:NAME: timm's default, or its tag's), 'none' (random init), PATH to weights (a torchvision "
        "state dict; alexnet_caffe: bvlc_alexnet.npy; timm:NAME: its state dict or .safetensors) or a "
        "torchvision weights name (resnet50: IMAGENET1K_V2)"))
    # optimization (defaults: the digits benchmark's chosen recipe, TLlib's optimizer; --recipe homework:
    # the first homework's code)
    recipe: str = field(default="default", metadata=_flag(
        "'default': the flags' defaults, the recipe the digits benchmark chose (docs/RESULTS.md: TLlib's "
        "optimizer, inv lr schedule, Nesterov, weight decay 1e-3; for DANN, CDAN and DSN its reversal, "
        "alpha 1 warming up over 1000 steps, a 1024-wide batch-norm G_d, the mean domain loss); 'homework': "
        "the first homework's code (step lr schedule, no Nesterov, weight decay 5e-5, G_d a copy of G_y, "
        "constant alpha 0.1, the summed domain loss); flags you give override it", choices=RECIPES))
    epochs: int = field(default=0, metadata=_flag(
        "epochs of training (0: 30 on a GPU, 1 on a CPU as a first look)"))
    iters_per_epoch: int = field(default=0, metadata=_flag(
        "iterations per epoch (0: one pass over the training domain); a fixed number gives every pair of "
        "domains the same budget, whatever their sizes (TLlib's --iters-per-epoch)", must_match=True))
    batch_size: int = field(default=64, metadata=_flag(
        "images per step (source and target batches alike), per process or in all (--batch_scope)", must_match=True))
    batch_scope: str = field(default="process", metadata=_flag(
        "'process': --batch_size per process (Accelerate's convention: N GPUs, N times the batch); "
        "'global': --batch_size over all processes (the same experiment on 1 or 8 GPUs)",
        choices=("process", "global")))
    lr: float = field(default=1e-3, metadata=_flag("SGD learning rate"))
    momentum: float = field(default=0.9, metadata=_flag("SGD momentum"))
    nesterov: bool = field(default=True, metadata=_flag("Nesterov momentum (TLlib's examples use it)"))
    weight_decay: float = field(default=1e-3, metadata=_flag("SGD weight decay"))
    lr_schedule: str = field(default="inv", metadata=_flag(
        "'step': lr * gamma^(epoch // step_size); 'dann': lr / (1 + 10 p)^0.75 over the run (p from 0 to 1); "
        "'inv': lr (1 + lr_gamma i)^-lr_decay over the iterations i, whatever the run's length (Caffe's and "
        "TLlib's)", choices=schedules.LR_SCHEDULES))
    step_size: int = field(default=20, metadata=_flag("epochs between lr drops (step schedule)"))
    gamma: float = field(default=0.1, metadata=_flag("lr drop factor (step schedule)"))
    lr_gamma: float = field(default=0.001, metadata=_flag("the inv schedule's gamma"))
    lr_decay: float = field(default=0.75, metadata=_flag("the inv schedule's power"))
    clip_grad: float = field(default=0.0, metadata=_flag(
        "clip the gradient's global L2 norm to this (0: no clipping); train/grad_norm logs it"))
    max_steps: int = field(default=0, metadata=_flag(
        "stop after this many iterations (0: run all epochs); a quick check of a setup: it also "
        "evaluates at most max_steps x batch_size images per domain, and skips the t-SNE and the saved "
        "weights unless --tsne / --save_model ask for them"))
    seed: int = field(default=0, metadata=_flag(
        "random seed (weights init, shuffling, dropout)", must_match=True))
    # hardware
    cpu: bool = field(default=False, metadata=_flag("run on the CPU even if a GPU is present"))
    mixed_precision: str = field(default="", metadata=_flag(
        "no|fp16|bf16 (default: the accelerate config, else bf16 on GPUs that support it; "
        "fp32 on a CPU unless this flag says bf16 and the CPU has AMX)", choices=("no", "fp16", "bf16")))
    channels_last: str = field(default="auto", metadata=_flag(
        "channels_last memory format: 'auto' = on for CUDA", choices=("auto", "on", "off")))
    compile: bool = field(default=False, metadata=_flag("torch.compile the model"))
    # outputs
    output_dir: str = field(default="", metadata=_flag(
        "results.json and final weights (default: runs/<method>-<source>-<target>-<time>)"))
    report_to: str = field(default="none", metadata=_flag(
        "experiment trackers", choices=("none", "wandb", "tensorboard", "all")))
    progress: str = field(default="auto", metadata=_flag(
        "'bar' (tqdm), 'lines' (one line per epoch with its time and the ETA: no carriage returns in a log), "
        "'off', or 'auto': a bar on a terminal, lines otherwise; TQDM_DISABLE=1 turns bars off",
        choices=("auto", "bar", "lines", "off")))
    log_every: int = field(default=10, metadata=_flag(
        "iterations between train/* logs, and between checks for a non-finite loss"))
    eval_every: int = field(default=1, metadata=_flag(
        "epochs between evaluations (the last epoch is always evaluated)"))
    # experiment tracking
    wandb_project: str = field(default="dann-pacs", metadata=_flag("W&B project (--report_to wandb)"))
    wandb_entity: str = field(default="", metadata=_flag("W&B entity: user or team (default: yours)"))
    run_name: str = field(default="", metadata=_flag(
        "tracker run name (default: the output folder's name); with several models, each model's run is "
        "<run_name>/<target>/seed<N>"))
    wandb_group: str = field(default="", metadata=_flag(
        "W&B group, e.g. the experiment: 4B (default: the run name: a command's models form one group)"))
    wandb_tags: str = field(default="", metadata=_flag("W&B tags, comma-separated"))
    tsne: bool | None = field(default=None, metadata=_flag(
        "at the end: t-SNE of G_f features of source and target test images (default: on, off with "
        "--max_steps)"))
    save_model: bool | None = field(default=None, metadata=_flag(
        "at the end: the weights as <output_dir>/model.safetensors (default: on, off with --max_steps; "
        "sweeps can turn it off: an AlexNet is 446 MB)"))
    log_model: bool = field(default=False, metadata=_flag(
        "at the end: the weights (model.safetensors) as a W&B model artifact of the run (--report_to wandb)"))
    tsne_samples: int = field(default=500, metadata=_flag("images per domain in the t-SNE"))
    seeds: str = field(default="", metadata=_flag(
        "comma-separated seeds: one model per seed (and target), reported as mean and std; "
        "overrides --seed"))
    # unsupervised model selection (dann/selection.py): scores that rank runs without target labels
    select_rules: str = field(default="all", metadata=_flag(
        "the selection scores written as select/<name> (results.json, trackers) at the end of the run, "
        "those that train nothing also at each evaluation: 'all', 'cheap' (skip those that train a model: "
        + ", ".join(n for n, r in plugins.SELECTION.items() if r.trains) + "), 'none', or names, "
        "comma-separated, of " + ", ".join(plugins.SELECTION)))
    rv_steps: int = field(default=200, metadata=_flag(
        "reverse validation's budget: steps of the fresh copy trained target -> source on the target's "
        "pseudo-labels (at most a quarter of the run's own steps: it adds at most a quarter to training)"))
    # fault tolerance
    checkpoint_every: int = field(default=0, metadata=_flag(
        "epochs between checkpoints in <output_dir>/checkpoints (0: only on SIGTERM/SIGINT)"))
    keep_checkpoints: int = field(default=2, metadata=_flag("newest checkpoints kept on disk"))
    resume: str = field(default="", metadata=_flag(
        "'auto': continue from the newest checkpoint in --output_dir (start fresh if none); "
        "PATH: a run folder or one of its checkpoints/step_* folders"))
    skip_bad_images: bool = field(default=False, metadata=_flag(
        "report unreadable image files and train without them, instead of stopping"))
    first_look: bool = field(default=False, metadata=_flag(
        "a first look on a CPU in a minute or two, no download: trains the source-only baseline and --method "
        "(DANN by default) on the shipped digits, mnist -> mnist_m, with the recipes of the CPU benchmark "
        "(sweeps/tables/digits.yaml), and prints both target accuracies side by side; flags you give "
        "override the recipe", scripts=ADAPT))
    # The plug-ins' own hyperparameters (not flags themselves: their fields are); filled with
    # the plug-in's defaults when not given.
    method_hp: hparams.Hparams | None = None
    backbone_hp: hparams.Hparams | None = None
    discriminator_hp: hparams.Hparams | None = None

    def __post_init__(self):
        for kind, registry in PLUGIN_KINDS:
            expected, given = plugins.hparams_of(registry, getattr(self, kind)), getattr(self, f"{kind}_hp")
            if given is None:
                object.__setattr__(self, f"{kind}_hp", expected())  # frozen: set once, here
            elif type(given) is not expected:
                raise ValueError(f"{kind}_hp is a {type(given).__name__}, but --{kind} "
                                 f"{getattr(self, kind)} takes {expected.__name__}")

    def flat(self) -> dict:
        """Every flag of this run and its value (shared and plug-in ones): results.json's
        `config`, the trackers' config and what a checkpoint records."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.endswith("_hp")}
        plugin = {k: v for kind, _ in plugin_kinds(self.method)
                  for k, v in getattr(self, f"{kind}_hp").values().items()}
        return {**shared, **plugin}

    def must_match(self) -> list[str]:
        """The flags a resumed run must share with its checkpoint: the shared ones that change the
        data, the batches or the networks, and every plug-in hyperparameter that shapes a network."""
        shared = [f.name for f in dataclasses.fields(self) if f.metadata and f.metadata["must_match"]]
        return shared + [name for kind, _ in plugin_kinds(self.method)
                         for name in getattr(self, f"{kind}_hp").architecture()]

    @property
    def targets(self) -> list[str]:
        return [t for t in self.target.split(",") if t]

    @property
    def seed_list(self) -> list[int]:
        """--seeds as ints, or [--seed] when --seeds is not given."""
        return [int(s) for s in self.seeds.split(",") if s.strip()] or [self.seed]


RULE_SETS = ("all", "cheap", "none")  # --select_rules shorthands
MAX_SEED = 2**32 - 1  # numpy's seeds (set_seed seeds numpy, torch and Python's random alike)


def selection_rules(config: TrainConfig, trains: bool | None = None) -> list[str]:
    """The rules --select_rules names, in registry order; `trains` False / True: only those that
    train nothing / only those that train a model of their own."""
    given = {n.strip() for n in config.select_rules.split(",")}
    names = [n for n, rule in plugins.SELECTION.items()
             if "all" in given or n in given or ("cheap" in given and not rule.trains)]
    return [n for n in names if trains is None or plugins.SELECTION[n].trains == trains]


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `error: ...; see --help`, exit 2 (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


class HelpFormatter(argparse.HelpFormatter):
    """Each flag's default after its help, unless it is empty (then the help says what it means)."""

    def _get_help_string(self, action):
        help = action.help or ""
        empty = action.default in ("", None, argparse.SUPPRESS) or action.default == []
        if not empty and action.option_strings and "%(default)" not in help:
            help += " (default: %(default)s)"
        return help


def _add_flag(parser, f: dataclasses.Field, default, help: str, choices=None) -> None:
    """One flag for a dataclass field: --name VALUE, or for booleans --name[=true|false] and --no-name."""
    if f.type in ("bool", bool, "bool | None"):  # None: decided for the run (see dann.run.resolve)
        parser.add_argument(f"--{f.name}", nargs="?", const=True, type=parse_bool, default=default,
                            metavar="true|false", help=help)
        parser.add_argument(f"--no-{f.name}", dest=f.name, action="store_false", help=argparse.SUPPRESS)
    else:
        kind = {"int": int, "float": float, "str": str}[f.type]
        parser.add_argument(f"--{f.name}", type=kind, default=default, choices=choices, help=help)


def shared_fields(script: str) -> list[dataclasses.Field]:
    """TrainConfig's flags that `script` ('dann' or 'baseline') takes."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata and script in f.metadata["scripts"]]


def plugin_fields(method: str, backbone: str, discriminator: str) -> dict[str, list[dataclasses.Field]]:
    """The chosen plug-ins' own flags, by kind (no discriminator flags for a method without G_d)."""
    chosen = {"method": method, "backbone": backbone, "discriminator": discriminator}
    return {kind: plugins.hparams_of(registry, chosen[kind]).fields() for kind, registry in plugin_kinds(method)}


def get_args_parser(script: str, method: str = "", backbone: str = "", discriminator: str = "") -> argparse.ArgumentParser:
    """The parser of `script` ('dann' or 'baseline') for the chosen plug-ins (default: the
    defaults): the shared flags, then each plug-in's own in a group of its name."""
    method = method or (TrainConfig.method if script == "dann" else plugins.methods_of(script)[0])
    backbone, discriminator = backbone or TrainConfig.backbone, discriminator or TrainConfig.discriminator
    parser = OneLineParser(
        prog=f"train_{script}.py",
        description="Train with unsupervised domain adaptation (--method)." if script == "dann"
        else "Train the source-only baseline (or, with --train_on target, the upper bound).",
        epilog="Each method, backbone and discriminator has flags of its own, listed above for the chosen "
               "ones; `--method NAME --help` (or --backbone, --discriminator) lists another's." if script == "dann"
        else "Each backbone has flags of its own, listed above for the chosen one; `--backbone NAME --help` "
             "lists another's.",
        formatter_class=HelpFormatter)
    for f in shared_fields(script):
        meta = {k: v for k, v in f.metadata.items() if k != "scripts"}
        _add_flag(parser, f, f.default, meta["help"], meta.get("choices"))
    names = {"method": method, "backbone": backbone, "discriminator": discriminator}
    for kind, fields in plugin_fields(method, backbone, discriminator).items():
        if fields:
            group = parser.add_argument_group(f"--{kind} {names[kind]}")
            for f in fields:
                _add_flag(group, f, f.default, f.metadata["help"], f.metadata["choices"])
    return parser


def owner_of(flag: str) -> str:
    """Which plug-ins take `flag` (a name without dashes), e.g. '--method dsn', for the error
    that refuses it in a run of another one."""
    owners = [f"--{kind} {name}" for kind, registry in PLUGIN_KINDS for name in registry
              if flag in {f.name for f in plugins.hparams_of(registry, name).fields()}]
    return " or ".join(owners)


def split_values(values: dict, method: str, backbone: str, discriminator: str) -> tuple[dict, dict, list[str]]:
    """Flag values -> (shared ones, {kind: hparams instance}, errors for names no chosen plug-in takes)."""
    shared_names = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata}
    chosen = plugin_fields(method, backbone, discriminator)
    shared = {k: v for k, v in values.items() if k in shared_names}
    built, errors = {}, []
    for kind, fields in chosen.items():
        names = {f.name for f in fields}
        built[kind] = {k: v for k, v in values.items() if k in names}
    taken = shared_names.union(*({f.name for f in fields} for fields in chosen.values()))
    names = {"method": method, "backbone": backbone, "discriminator": discriminator}
    for k in values:
        if k not in taken:
            owner = owner_of(k)
            if not owner:
                errors.append(f"unknown flag --{k}")
            elif "discriminator" in chosen or "--discriminator" not in owner:
                errors.append(f"--{k} is a flag of {owner}, not of this run's "
                              + ", ".join(f"--{kind} {names[kind]}" for kind in chosen))
            else:
                errors.append(f"--{k}: --method {method} has no domain discriminator")
    return shared, built, errors


def make_config(**values) -> TrainConfig:
    """A TrainConfig from flag values by name, shared and plug-in ones alike (as the command
    line gives them), e.g. make_config(method="cdan", alpha=1.0, epochs=3). A name that no
    chosen plug-in takes is a ValueError."""
    method, backbone = values.get("method", TrainConfig.method), values.get("backbone", TrainConfig.backbone)
    values = {**recipe_defaults(values.get("recipe", TrainConfig.recipe), method, backbone), **values}
    discriminator = values.get("discriminator", TrainConfig.discriminator)
    shared, built, errors = split_values(values, method, backbone, discriminator)
    if errors:
        raise ValueError("; ".join(errors))
    hp = {f"{kind}_hp": plugins.hparams_of(registry, shared.get(kind, getattr(TrainConfig, kind)))(**built.get(kind, {}))
          for kind, registry in PLUGIN_KINDS if kind in built}
    return TrainConfig(**shared, **hp)


def with_method(config: TrainConfig, method: str, **changes) -> TrainConfig:
    """The same run settings (data, budget, backbone) for another method, with its defaults."""
    return dataclasses.replace(config, method=method, method_hp=plugins.hparams_of(plugins.METHODS, method)(),
                               **changes)


def validate(config: TrainConfig) -> list[str]:
    """Everything wrong with the flag values, as one-line messages (empty if fine).
    Domain names are checked later, against the domains the dataset holds."""
    values = config.flat()
    errors = [f"--{k} must be a finite number, got {v}" for k, v in values.items()
              if isinstance(v, float) and not math.isfinite(v)]
    positive = {"lr": config.lr, "batch_size": config.batch_size, "step_size": config.step_size,
                "log_every": config.log_every, "eval_every": config.eval_every}
    errors += [f"--{k} must be > 0, got {v}" for k, v in positive.items() if v <= 0]
    non_negative = {"weight_decay": config.weight_decay, "gamma": config.gamma,
                    "lr_gamma": config.lr_gamma, "lr_decay": config.lr_decay,
                    "max_steps": config.max_steps, "epochs": config.epochs, "clip_grad": config.clip_grad,
                    "iters_per_epoch": config.iters_per_epoch,
                    "checkpoint_every": config.checkpoint_every}
    errors += [f"--{k} must be >= 0, got {v}" for k, v in non_negative.items() if v < 0]
    for kind, _ in plugin_kinds(config.method):
        errors += getattr(config, f"{kind}_hp").errors()
    if config.nesterov and config.momentum <= 0:
        errors.append(f"--nesterov needs --momentum > 0, got {config.momentum}")
    if not 0 <= config.source_val < 1:
        errors.append(f"--source_val must be in [0, 1), a fraction of the training domain, got {config.source_val}")
    if config.rv_steps < 1:
        errors.append(f"--rv_steps must be >= 1, got {config.rv_steps}")
    unknown = [n for n in config.select_rules.split(",") if n.strip() not in (*RULE_SETS, *plugins.SELECTION)]
    if unknown:
        errors.append(f"--select_rules: unknown {', '.join(unknown)}; give all, cheap, none or names of "
                      + ", ".join(plugins.SELECTION))
    if config.num_workers < -1:
        errors.append(f"--num_workers must be >= 0 (or -1: automatic), got {config.num_workers}")
    if config.keep_checkpoints < 1:
        errors.append(f"--keep_checkpoints must be >= 1, got {config.keep_checkpoints}")
    if config.resume == "auto" and not config.output_dir:
        errors.append("--resume auto needs --output_dir: the folder of the run to continue")
    if config.target and not config.targets:
        errors.append("--target is empty; give a domain, e.g. --target art_painting")
    if len(set(config.targets)) != len(config.targets):
        errors.append(f"--target lists a domain twice: {config.target}")
    try:
        seeds = config.seed_list
        if len(set(seeds)) != len(seeds):
            errors.append(f"--seeds lists a seed twice: {config.seeds}")
        errors += [f"--{'seeds' if config.seeds else 'seed'} must be between 0 and {MAX_SEED}, got {s}"
                   for s in seeds if not 0 <= s <= MAX_SEED][:1]
    except ValueError:
        errors.append(f"--seeds must be comma-separated integers, e.g. 0,1,2; got {config.seeds!r}")
    if config.log_model and config.report_to not in ("wandb", "all"):
        errors.append("--log_model uploads the weights to W&B; add --report_to wandb (or all)")
    if config.log_model and config.save_model is False:
        errors.append("--log_model uploads the saved weights; drop --no-save_model")
    if not 0 <= config.momentum < 1:
        errors.append(f"--momentum must be in [0, 1), got {config.momentum} (1 and more diverge)")
    if config.tsne_samples <= 1:
        errors.append(f"--tsne_samples must be > 1, got {config.tsne_samples}")
    return errors


def chosen_plugins(script: str, argv: list[str]) -> tuple[str, str, str, dict]:
    """--method, --backbone and --discriminator from argv (defaults where absent): they decide
    which flags the full parser offers; and the recipe of --first_look (empty without it), the
    parser's defaults then. An unknown name, or a method of the other script, is one line."""
    pre = OneLineParser(prog=f"train_{script}.py", add_help=False)
    pre.add_argument("--method", default=TrainConfig.method if script == "dann" else plugins.methods_of(script)[0],
                     choices=plugins.METHODS)
    pre.add_argument("--backbone", choices=plugins.BACKBONES)
    pre.add_argument("--discriminator", choices=plugins.DISCRIMINATORS)
    pre.add_argument("--first_look", nargs="?", const=True, type=parse_bool, default=False)
    pre.add_argument("--recipe", choices=RECIPES, default=TrainConfig.recipe)
    known, _ = pre.parse_known_args(argv)
    if plugins.script_of(known.method) != script:
        pre.error(f"--method {known.method}: train_baseline.py trains the source-only baseline; the adaptation "
                  f"methods are train_dann.py --method NAME" if script == "baseline"
                  else f"--method {known.method}: the source-only baseline is train_baseline.py")
    look = first_look.recipe(known.method) if known.first_look and script == "dann" else {}
    backbone = known.backbone or look.get("backbone", TrainConfig.backbone)
    recipe = {**recipe_defaults(known.recipe, known.method, backbone), **look}
    return (known.method, backbone, known.discriminator or recipe.get("discriminator", TrainConfig.discriminator),
            recipe)


def parse_config(script: str, argv: list[str] | None = None) -> TrainConfig:
    """Parse and check flags; every mistake exits 2 with one line (`error: ...; see --help`)."""
    if script not in SCRIPTS:
        raise ValueError(f"unknown script {script!r}")
    argv = sys.argv[1:] if argv is None else list(argv)
    method, backbone, discriminator, recipe = chosen_plugins(script, argv)
    parser = get_args_parser(script, method, backbone, discriminator)
    parser.set_defaults(**recipe)  # --recipe, --first_look: their defaults, under the flags given
    args, unknown = parser.parse_known_args(argv)
    flags = [a.removeprefix("--").split("=", 1)[0] for a in unknown if a.startswith("--")]
    if unknown and not flags:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    other = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata} - {f.name for f in shared_fields(script)}
    errors = [f"--{f} is a flag of train_{'baseline' if script == 'dann' else 'dann'}.py, not of train_{script}.py"
              for f in flags if f in other]
    errors += [f"--{name} is empty; give a domain, e.g. --{name} {example}"  # "" would mean the dataset's default
               for name, example in (("source", "photo"), ("target", "art_painting")) if given_empty(argv, name)]
    errors += split_values({f: None for f in flags if f not in other}, method, backbone, discriminator)[2]
    if errors:
        parser.error("; ".join(errors))
    values = {k: v for k, v in vars(args).items()}
    if script == "baseline":
        values["method"] = plugins.methods_of("baseline")[0]
    config = make_config(**values)
    errors = validate(config)
    if errors:
        parser.error("; ".join(errors))
    return config


def given_empty(argv: list[str], name: str) -> bool:
    """Whether argv gives --name an empty value (--name= or --name "")."""
    return any(arg == f"--{name}=" or (arg == f"--{name}" and i + 1 < len(argv) and argv[i + 1] == "")
               for i, arg in enumerate(argv))


def default_output_dir(config: TrainConfig, name: str = "") -> str:
    """runs/<name or method>-<source>-<target>-<time>. The processes of one launch (torchrun, accelerate
    launch) share the launcher as their parent and take its start time, so that they name one
    folder without talking to each other (multi-node runs: pass --output_dir)."""
    started = time.time()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import psutil

        started = psutil.Process(os.getppid()).create_time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    return f"runs/{name or config.method}-{config.source}-{config.target.replace(',', '+')}-{stamp}"

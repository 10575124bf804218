"""The run configuration: one dataclass whose field names are the command-line flags.

The same names are the W&B sweep parameter names, so a sweep's `${args}` pass straight
through and `tests/test_sweeps.py` can check every sweep YAML against this file. Boolean
flags take `--flag`, `--no-flag` and `--flag=true|false` (the form W&B writes).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass, field

from dann import plugins

SCRIPTS = ("dann", "baseline")  # train_dann.py, train_baseline.py
ADAPT = ("dann",)  # flags of the adaptation methods only
# Choices are the registries themselves (argparse checks `in`), so plug-ins registered
# before parsing are accepted.


def _flag(help: str, scripts: tuple[str, ...] = SCRIPTS, **argparse_kwargs):
    """A dataclass field that also describes its command-line flag."""
    return {"help": help, "scripts": scripts, **argparse_kwargs}


@dataclass
class TrainConfig:
    # data
    dataset: str = field(default="pacs", metadata=_flag(
        "pacs | folder (any <data_root>/<domain>/<class>/<image> tree) | digits (mnist, mnist_m, "
        "svhn, usps) | digits_shipped (a CPU benchmark from data installed packages ship)",
        choices=plugins.DATASETS))
    source: str = field(default="", metadata=_flag(
        "source domain (labeled); default: the dataset's usual pair (pacs: photo -> art_painting)"))
    target: str = field(default="", metadata=_flag(
        "target domain (unlabeled during adaptation, and the test set); several: a,b"))
    data_root: str = field(default="", metadata=_flag(
        "dataset folder (default data/PACS, data/digits); only the default folder is downloaded "
        "when missing, unless --download"))
    download: bool = field(default=False, metadata=_flag(
        "download the dataset into --data_root if it is missing there"))
    train_on: str = field(default="source", metadata=_flag(
        "'target' trains on the labeled target domain (the upper bound)",
        scripts=("baseline",), choices=("source", "target")))
    augment: bool = field(default=False, metadata=_flag(
        "training augmentation: random crop (images larger than the network input) and "
        "horizontal flip (datasets where a flip keeps the class)"))
    data_path: str = field(default="auto", metadata=_flag(
        "'tensor': decode once, keep uint8 images on the device; 'loader': decode every "
        "epoch in DataLoader workers (folder datasets); 'auto': tensor when it fits in memory",
        choices=("auto", "tensor", "loader")))
    cache_dir: str = field(default="", metadata=_flag(
        "where decoded domains are cached (default: $XDG_CACHE_HOME/dann_pacs or ~/.cache/dann_pacs)"))
    num_workers: int = field(default=-1, metadata=_flag(
        "DataLoader workers / decode processes (-1: one per available CPU core, at most 4)"))
    # model
    method: str = field(default="dann", metadata=_flag(
        "domain adaptation method (train_baseline.py trains the source-only baseline)",
        scripts=ADAPT, choices=plugins.METHODS))
    backbone: str = field(default="alexnet", metadata=_flag(
        "feature extractor G_f and classifier G_y", choices=plugins.BACKBONES))
    discriminator: str = field(default="copy", metadata=_flag(
        "G_d: 'copy' (the backbone's own: G_y's architecture with 2 outputs, fc6/fc7 copied for "
        "AlexNet), 'paper' (the DANN paper's 1024-1024-2 MLP)", scripts=ADAPT,
        choices=plugins.DISCRIMINATORS))
    pretrained: str = field(default="imagenet", metadata=_flag(
        "'imagenet' (download), 'none' (random init) or PATH to weights (a torchvision state dict; "
        "alexnet_caffe: bvlc_alexnet.npy)"))
    entropy_conditioning: bool = field(default=False, metadata=_flag(
        "cdan: weight each example's domain loss by 1 + exp(-entropy of its prediction)", scripts=ADAPT))
    cdan_random_dim: int = field(default=1024, metadata=_flag(
        "cdan: size of the randomized multilinear map, used when features x classes exceeds 4096",
        scripts=ADAPT))
    dsn_recon: float = field(default=0.15, metadata=_flag("dsn: weight of L_recon", scripts=ADAPT))
    dsn_difference: float = field(default=0.075, metadata=_flag("dsn: weight of L_difference", scripts=ADAPT))
    dsn_similarity: float = field(default=0.25, metadata=_flag(
        "dsn: weight of L_similarity (the domain loss through gradient reversal)", scripts=ADAPT))
    # optimization (defaults: the seed's homework settings)
    epochs: int = field(default=0, metadata=_flag(
        "passes over the training domain (0: 30 on a GPU, 1 on a CPU as a first look)"))
    batch_size: int = field(default=64, metadata=_flag(
        "images per step (source and target batches alike), per process or in all (--batch_scope)"))
    batch_scope: str = field(default="process", metadata=_flag(
        "'process': --batch_size per process (Accelerate's convention: N GPUs, N times the batch); "
        "'global': --batch_size over all processes (the same experiment on 1 or 8 GPUs)",
        choices=("process", "global")))
    lr: float = field(default=1e-3, metadata=_flag("SGD learning rate"))
    momentum: float = field(default=0.9, metadata=_flag("SGD momentum"))
    weight_decay: float = field(default=5e-5, metadata=_flag("SGD weight decay"))
    lr_schedule: str = field(default="step", metadata=_flag(
        "'step': lr * gamma^(epoch // step_size); 'dann': lr / (1 + 10 p)^0.75",
        choices=("step", "dann")))
    step_size: int = field(default=20, metadata=_flag("epochs between lr drops (step schedule)"))
    gamma: float = field(default=0.1, metadata=_flag("lr drop factor (step schedule)"))
    alpha: float = field(default=0.1, metadata=_flag(
        "gradient reversal weight (the largest value under the dann schedule)", scripts=ADAPT))
    alpha_schedule: str = field(default="constant", metadata=_flag(
        "'constant': alpha; 'dann': alpha * (2 / (1 + exp(-10 p)) - 1)",
        scripts=ADAPT, choices=("constant", "dann")))
    max_steps: int = field(default=0, metadata=_flag(
        "stop after this many iterations (0: run all epochs); a quick check of a setup"))
    seed: int = field(default=0, metadata=_flag("random seed (weights init, shuffling, dropout)"))
    # hardware
    cpu: bool = field(default=False, metadata=_flag("run on the CPU even if a GPU is present"))
    mixed_precision: str = field(default="", metadata=_flag(
        "no|fp16|bf16 (default: the accelerate config, else bf16 on GPUs that support it; "
        "always fp32 on a CPU)", choices=("", "no", "fp16", "bf16")))
    channels_last: str = field(default="auto", metadata=_flag(
        "channels_last memory format: 'auto' = on for CUDA", choices=("auto", "on", "off")))
    compile: bool = field(default=False, metadata=_flag("torch.compile the model"))
    # outputs
    output_dir: str = field(default="", metadata=_flag(
        "results.json and final weights (default: runs/<method>-<source>-<target>-<time>)"))
    report_to: str = field(default="none", metadata=_flag(
        "experiment trackers", choices=("none", "wandb", "tensorboard", "all")))
    log_every: int = field(default=10, metadata=_flag(
        "iterations between train/* logs, and between checks for a non-finite loss"))
    eval_every: int = field(default=1, metadata=_flag(
        "epochs between evaluations (the last epoch is always evaluated)"))
    # experiment tracking
    wandb_project: str = field(default="dann-pacs", metadata=_flag("W&B project (--report_to wandb)"))
    wandb_entity: str = field(default="", metadata=_flag("W&B entity: user or team (default: yours)"))
    run_name: str = field(default="", metadata=_flag("tracker run name (default: W&B's random name)"))
    wandb_group: str = field(default="", metadata=_flag("W&B group, e.g. the experiment: 4B"))
    wandb_tags: str = field(default="", metadata=_flag("W&B tags, comma-separated"))
    tsne: bool = field(default=True, metadata=_flag(
        "at the end: t-SNE of G_f features of source and target test images"))
    tsne_samples: int = field(default=500, metadata=_flag("images per domain in the t-SNE"))
    seeds: str = field(default="", metadata=_flag(
        "comma-separated seeds: one model per seed (and target), reported as mean and std; "
        "overrides --seed"))
    # fault tolerance
    checkpoint_every: int = field(default=0, metadata=_flag(
        "epochs between checkpoints in <output_dir>/checkpoints (0: only on SIGTERM/SIGINT)"))
    keep_checkpoints: int = field(default=2, metadata=_flag("newest checkpoints kept on disk"))
    resume: str = field(default="", metadata=_flag(
        "'auto': continue from the newest checkpoint in --output_dir (start fresh if none); "
        "PATH: a run folder or one of its checkpoints/step_* folders"))
    skip_bad_images: bool = field(default=False, metadata=_flag(
        "report unreadable image files and train without them, instead of stopping"))

    @property
    def targets(self) -> list[str]:
        return [t for t in self.target.split(",") if t]

    @property
    def seed_list(self) -> list[int]:
        """--seeds as ints, or [--seed] when --seeds is not given."""
        return [int(s) for s in self.seeds.split(",") if s.strip()] or [self.seed]


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def get_args_parser(script: str) -> argparse.ArgumentParser:
    """argparse parser with one flag per TrainConfig field that `script` ('dann' or 'baseline') takes."""
    parser = argparse.ArgumentParser(
        description="Train with domain adaptation (DANN, CDAN, DSN)." if script == "dann"
        else "Train the source-only baseline (or, with --train_on target, the upper bound).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        meta = dict(f.metadata)
        if script not in meta.pop("scripts"):
            continue
        if f.type in ("bool", bool):
            # --flag, --flag=true|false (W&B's form), --no-flag
            parser.add_argument(f"--{f.name}", nargs="?", const=True, type=parse_bool,
                                default=f.default, metavar="true|false", **meta)
            parser.add_argument(f"--no-{f.name}", dest=f.name, action="store_false", help=argparse.SUPPRESS)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            parser.add_argument(f"--{f.name}", type=kind, default=f.default, **meta)
    return parser


def validate(config: TrainConfig) -> list[str]:
    """Everything wrong with the flag values, as argparse-style messages (empty if fine).
    Domain names are checked later, against the domains the dataset holds."""
    errors = []
    numbers = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.type == "float"}
    errors += [f"--{k} must be a finite number, got {v}" for k, v in numbers.items() if not math.isfinite(v)]
    positive = {"lr": config.lr, "batch_size": config.batch_size, "step_size": config.step_size,
                "log_every": config.log_every, "eval_every": config.eval_every,
                "cdan_random_dim": config.cdan_random_dim}
    errors += [f"--{k} must be > 0, got {v}" for k, v in positive.items() if v <= 0]
    non_negative = {"momentum": config.momentum, "weight_decay": config.weight_decay,
                    "alpha": config.alpha, "gamma": config.gamma, "max_steps": config.max_steps,
                    "epochs": config.epochs, "checkpoint_every": config.checkpoint_every,
                    "dsn_recon": config.dsn_recon, "dsn_difference": config.dsn_difference,
                    "dsn_similarity": config.dsn_similarity}
    errors += [f"--{k} must be >= 0, got {v}" for k, v in non_negative.items() if v < 0]
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
    except ValueError:
        errors.append(f"--seeds must be comma-separated integers, e.g. 0,1,2; got {config.seeds!r}")
    if config.tsne_samples <= 1:
        errors.append(f"--tsne_samples must be > 1, got {config.tsne_samples}")
    return errors


def parse_config(script: str, argv: list[str] | None = None) -> TrainConfig:
    """Parse and check flags; a bad value exits with an argparse-style one-line error."""
    if script not in SCRIPTS:
        raise ValueError(f"unknown script {script!r}")
    parser = get_args_parser(script)
    config = TrainConfig(**vars(parser.parse_args(argv)))
    errors = validate(config)
    if script == "baseline":
        config.method = "baseline"
    elif config.method == "baseline":
        errors.append("--method baseline: the source-only baseline is train_baseline.py")
    if errors:
        parser.error("; ".join(errors))
    return config


def default_output_dir(config: TrainConfig) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"runs/{config.method}-{config.source}-{config.target.replace(',', '+')}-{stamp}"

"""The run configuration: one dataclass whose field names are the command-line flags.

The same names are the W&B sweep parameter names, so a sweep's `${args}` pass straight
through and `tests/test_sweeps.py` can check every sweep YAML against this file.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass, field

DOMAINS = ("photo", "art_painting", "cartoon", "sketch")
METHODS = ("dann", "baseline")


def _flag(help: str, methods: tuple[str, ...] = METHODS, **argparse_kwargs):
    """A dataclass field that also describes its command-line flag."""
    return {"help": help, "methods": methods, **argparse_kwargs}


@dataclass
class TrainConfig:
    # data
    source: str = field(default="photo", metadata=_flag("source domain (labeled)", choices=DOMAINS))
    target: str = field(default="art_painting", metadata=_flag(
        "target domain (unlabeled during adaptation, and the test set)"))
    data_root: str = field(default="data/PACS", metadata=_flag(
        "PACS folder <domain>/<class>/<image>; downloaded from the Hugging Face Hub if missing"))
    train_on: str = field(default="source", metadata=_flag(
        "baseline only: 'target' trains on the labeled target domain (the upper bound)",
        methods=("baseline",), choices=("source", "target")))
    augment: bool = field(default=False, metadata=_flag(
        "training augmentation: random 224 crop of the 256 image and horizontal flip"))
    data_path: str = field(default="auto", metadata=_flag(
        "'tensor': decode once, keep uint8 images on the device; 'loader': decode every "
        "epoch in DataLoader workers; 'auto': tensor when it fits in memory",
        choices=("auto", "tensor", "loader")))
    cache_dir: str = field(default="", metadata=_flag(
        "where decoded domains are cached (default: $XDG_CACHE_HOME/dann_pacs or ~/.cache/dann_pacs)"))
    num_workers: int = field(default=4, metadata=_flag("DataLoader workers / decode processes"))
    # model
    pretrained: str = field(default="imagenet", metadata=_flag(
        "'imagenet' (torchvision download), 'none' (random init) or PATH to an AlexNet state dict"))
    # optimization (defaults: the seed's homework settings)
    epochs: int = field(default=30, metadata=_flag("passes over the training domain"))
    batch_size: int = field(default=64, metadata=_flag(
        "images per process per step (source and target batches alike)"))
    lr: float = field(default=1e-3, metadata=_flag("SGD learning rate"))
    momentum: float = field(default=0.9, metadata=_flag("SGD momentum"))
    weight_decay: float = field(default=5e-5, metadata=_flag("SGD weight decay"))
    lr_schedule: str = field(default="step", metadata=_flag(
        "'step': lr * gamma^(epoch // step_size); 'dann': lr / (1 + 10 p)^0.75",
        choices=("step", "dann")))
    step_size: int = field(default=20, metadata=_flag("epochs between lr drops (step schedule)"))
    gamma: float = field(default=0.1, metadata=_flag("lr drop factor (step schedule)"))
    alpha: float = field(default=0.1, metadata=_flag(
        "gradient reversal weight (the largest value under the dann schedule)", methods=("dann",)))
    alpha_schedule: str = field(default="constant", metadata=_flag(
        "'constant': alpha; 'dann': alpha * (2 / (1 + exp(-10 p)) - 1)",
        methods=("dann",), choices=("constant", "dann")))
    max_steps: int = field(default=0, metadata=_flag(
        "stop after this many iterations (0: run all epochs); a quick check of a setup"))
    seed: int = field(default=0, metadata=_flag("random seed (weights init, shuffling, dropout)"))
    # hardware
    cpu: bool = field(default=False, metadata=_flag("run on the CPU even if a GPU is present"))
    mixed_precision: str = field(default="", metadata=_flag(
        "no|fp16|bf16 (default: the accelerate config, else bf16 on GPUs that support it)",
        choices=("", "no", "fp16", "bf16")))
    channels_last: str = field(default="auto", metadata=_flag(
        "channels_last memory format: 'auto' = on for CUDA", choices=("auto", "on", "off")))
    compile: bool = field(default=False, metadata=_flag("torch.compile the model"))
    # outputs
    output_dir: str = field(default="", metadata=_flag(
        "results.json and final weights (default: runs/<method>-<source>-<target>-<time>)"))
    report_to: str = field(default="none", metadata=_flag(
        "experiment trackers", choices=("none", "wandb", "tensorboard", "all")))
    log_every: int = field(default=10, metadata=_flag("iterations between train/* tracker logs"))
    # experiment tracking
    wandb_project: str = field(default="dann-pacs", metadata=_flag("W&B project (--report_to wandb)"))
    wandb_entity: str = field(default="", metadata=_flag("W&B entity: user or team (default: yours)"))
    run_name: str = field(default="", metadata=_flag("tracker run name (default: W&B's random name)"))
    wandb_group: str = field(default="", metadata=_flag("W&B group, e.g. the experiment: 4B"))
    wandb_tags: str = field(default="", metadata=_flag("W&B tags, comma-separated"))
    tsne: bool = field(default=True, metadata=_flag(
        "at the end: t-SNE of G_f features (source and target) and the target confusion matrix"))
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


def get_args_parser(method: str) -> argparse.ArgumentParser:
    """argparse parser with one flag per TrainConfig field that applies to `method`."""
    parser = argparse.ArgumentParser(
        description=f"Train {'DANN' if method == 'dann' else 'the source-only baseline'} on PACS.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        meta = dict(f.metadata)
        if method not in meta.pop("methods"):
            continue
        if f.type in ("bool", bool):
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction,
                                default=f.default, **meta)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            parser.add_argument(f"--{f.name}", type=kind, default=f.default, **meta)
    return parser


def validate(config: TrainConfig, method: str) -> list[str]:
    """Everything wrong with the flag values, as argparse-style messages (empty if fine)."""
    errors = []
    positive = {"lr": config.lr, "batch_size": config.batch_size, "epochs": config.epochs,
                "step_size": config.step_size, "log_every": config.log_every}
    errors += [f"--{k} must be > 0, got {v}" for k, v in positive.items() if v <= 0]
    non_negative = {"momentum": config.momentum, "weight_decay": config.weight_decay,
                    "alpha": config.alpha, "gamma": config.gamma, "max_steps": config.max_steps,
                    "num_workers": config.num_workers}
    non_negative["checkpoint_every"] = config.checkpoint_every
    errors += [f"--{k} must be >= 0, got {v}" for k, v in non_negative.items() if v < 0]
    if config.keep_checkpoints < 1:
        errors.append(f"--keep_checkpoints must be >= 1, got {config.keep_checkpoints}")
    if config.resume == "auto" and not config.output_dir:
        errors.append("--resume auto needs --output_dir: the folder of the run to continue")
    targets = config.targets
    if not targets:
        errors.append("--target is empty; give a domain, e.g. --target art_painting")
    for t in targets:
        if t not in DOMAINS:
            errors.append(f"--target: unknown domain {t!r}; choose from {', '.join(DOMAINS)}")
        elif t == config.source and not (method == "baseline" and config.train_on == "target"):
            errors.append(f"--target {t} is the same as --source; adaptation needs two domains")
    if len(set(targets)) != len(targets):
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


def parse_config(method: str, argv: list[str] | None = None) -> TrainConfig:
    """Parse and check flags; a bad value exits with an argparse-style one-line error."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    parser = get_args_parser(method)
    config = TrainConfig(**vars(parser.parse_args(argv)))
    errors = validate(config, method)
    if errors:
        parser.error("; ".join(errors))
    return config


def default_output_dir(config: TrainConfig, method: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"runs/{method}-{config.source}-{config.target.replace(',', '+')}-{stamp}"

"""Datasets as plug-ins, and what a run trains and tests on: a `Split` of `Domain`s.

A dataset plug-in (registered in dann/plugins.py) subclasses `Dataset`: it names its domains
and classes, fetches what is missing, and gives each domain's images. The protocol is the
dataset's: PACS, Office-31, Office-Home, VisDA-2017 and folder datasets are transductive (the
whole target domain is both the unlabeled training set and the test set, as in the first
homework); the digits datasets and DomainNet train on the train splits and test on the
target's test split. Either way --source_val holds a labeled validation split out of the
training domain (`split_validation`). A dataset also names the figure its papers report
(`headline`): accuracy, or VisDA-2017's mean per-class accuracy (`mean_class_accuracy`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch

from dann import plugins
from dann.data import ImageTransform, InputSpec, TensorDomain, crop_size, stream_seed
from dann.errors import UserError


class Dataset:
    """The interface of a dataset plug-in, with the defaults most datasets share."""

    image_size: int = 256  # images are uint8 (3, image_size, image_size)
    hflip = True  # may training flip images horizontally (not digits)
    transductive = True  # the test split of a domain is the whole domain
    default_pair: tuple[str, str] | None = None  # --source / --target when not given
    default_root = ""  # its folder without --data_root (the only one downloaded unasked)
    loader_path = False  # can DataLoader workers decode its files every epoch (--data_path loader)
    headline = "acc"  # the target figure its papers report: "acc" or "mean_class_acc" (VisDA-2017)

    def __init__(self, config):
        self.config = config
        self.root = Path(config.data_root or self.default_root)
        self.may_download = not config.data_root or config.download

    def domains(self) -> list[str]:
        raise NotImplementedError

    def prepare(self, domains: list[str]) -> None:
        """Download or build what `domains` need (the main process runs it first)."""

    def classes(self, domains: list[str]) -> list[str]:
        raise NotImplementedError

    def images(self, domain: str, split: str, workers: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """uint8 images (N, 3, S, S) and labels (N,) on the CPU, and the files left out as unreadable."""
        raise NotImplementedError

    def files(self, domain: str, workers: int, split: str = "train"):
        """The decoding path's `DomainFiles` of one split (datasets with `loader_path` only)."""
        raise NotImplementedError

    def loader_domain(self, files, *, device: torch.device, transform: ImageTransform, num_workers: int,
                      **batches) -> TensorDomain:
        """The domain of `files` decoded by DataLoader workers every epoch (`loader_path` only)."""
        raise NotImplementedError

    def sample_stats(self, files) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """'domain' normalization on the decoding path: a sample of the files' statistics (`loader_path` only)."""
        raise NotImplementedError

    def choose_image_size(self, spec: InputSpec, domains: list[str]) -> int:
        """The side its images are decoded to, for a backbone expecting `spec` (called before
        any decoding; folder datasets decode small images at their own size)."""
        return self.image_size


def mean_class_accuracy(confusion) -> float:
    """The mean over classes of each class's accuracy, from a confusion matrix whose rows are
    the true classes (VisDA-2017's figure: every class counts the same, however many images it
    has). Classes without examples (empty rows) are left out of the mean."""
    counts = np.asarray(confusion, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix is square, got shape {counts.shape}")
    support = counts.sum(axis=1)
    present = support > 0
    if not present.any():
        raise ValueError("the confusion matrix counts no examples")
    return float((counts.diagonal()[present] / support[present]).mean())


def build(config) -> Dataset:
    return plugins.load(plugins.DATASETS, config.dataset)(config)


def check_domains(dataset: Dataset, config) -> tuple[str, str]:
    """(--source, --target), the dataset's usual pair where not given; refuses names the
    dataset does not have."""
    found = dataset.domains()
    source, target = config.source, config.target
    if not source or not target:
        if dataset.default_pair is None:
            raise UserError(f"--dataset {config.dataset} needs --source and --target; "
                            f"domains in {dataset.root}: {', '.join(found) or 'none'}")
        source, target = source or dataset.default_pair[0], target or dataset.default_pair[1]
    targets = [t for t in target.split(",") if t]
    for flag, names in (("--source", [source]), ("--target", targets)):
        for name in names:
            if name not in found:
                raise UserError(f"{flag}: unknown domain {name!r} in --dataset {config.dataset}; "
                                f"choose from {', '.join(found)}")
    for t in targets:
        if t == source and config.train_on != "target":
            raise UserError(f"--target {t} is the same as --source; adaptation needs two domains")
    return source, target


@dataclass
class Split:
    """What one model trains and is tested on."""
    train: TensorDomain  # labeled batches: the source (the target, for the upper bound)
    target: TensorDomain | None  # unlabeled target batches (labels never reach the method)
    test: TensorDomain  # target accuracy
    source_test: TensorDomain  # source accuracy
    classes: list[str]
    # labeled images of the training domain held out of `train` (--source_val): what the
    # selection scores validate on (dann/selection.py); None with --source_val 0
    source_val: TensorDomain | None = None


VAL_SEED = 0  # the held-out images depend on the domain alone: the same for every seed and configuration


def held_out(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held-out) example indices, sorted: round(fraction * n) held out (at least one),
    stratified: each class gives its share, examples drawn at random within their class."""
    n = len(labels)
    count = max(1, round(fraction * n))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    labels = labels[order].cpu()
    # an example's rank among those of its class in the random order, as a fraction of the class:
    # taking the lowest fractions first takes every class in proportion
    _, inverse, sizes = labels.unique(return_inverse=True, return_counts=True)
    rank = torch.zeros(n)
    for c in range(len(sizes)):
        members = (inverse == c).nonzero().flatten()
        rank[members] = (torch.arange(len(members)) + 0.5) / len(members)
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[order[rank.argsort(stable=True)[:count]]] = True
    return (~chosen).nonzero().flatten(), chosen.nonzero().flatten()


def split_validation(domain: TensorDomain, fraction: float) -> tuple[TensorDomain, TensorDomain | None]:
    """(the training part, the validation split) of a labeled training domain (--source_val)."""
    if fraction == 0:
        return domain, None
    kept, val = held_out(domain.labels, fraction, stream_seed(VAL_SEED, 0, f"{domain.name}/source_val"))
    if not len(kept):
        raise UserError(f"--source_val {fraction} leaves none of the {len(domain)} images of {domain.name} to "
                        f"train on; lower --source_val (0: no validation split)")
    return domain.subset(kept), domain.subset(val, f"{domain.name}_val")


def default_workers() -> int:
    """One per CPU core this process may use, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores))


def domain_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (for 'domain' normalization)."""
    x = images.float().div_(255).transpose(0, 1).reshape(3, -1)  # (3, N*S*S)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).clamp_min(1e-3).tolist())


def choose_data_path(config, dataset: Dataset, num_images: int, device: torch.device, world: int) -> str:
    """'tensor' when the decoded images fit in half the free memory of this process's device."""
    if not dataset.loader_path:
        return "tensor"
    if config.data_path != "auto":
        return config.data_path
    needed = num_images * 3 * dataset.image_size ** 2
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = psutil.virtual_memory().available / max(world, 1)
    return "tensor" if needed < free / 2 else "loader"


def load_splits(dataset: Dataset, config, spec: InputSpec, *, device: torch.device, rank: int,
                world: int, channels_last: bool, workers: int) -> tuple[dict[str, Split], dict]:
    """One Split per target, for a method whose backbone expects `spec`; every domain is
    decoded once and shared. Also returns what results.json records: the data path and
    the image files left out as unreadable."""
    names = list(dict.fromkeys([config.source, *config.targets]))
    crop = crop_size(spec, dataset.choose_image_size(spec, names), config.backbone, config.dataset)
    splits = ("train",) if dataset.transductive else ("train", "test")
    classes = dataset.classes(names)
    if config.data_path == "loader" and not dataset.loader_path:
        raise UserError(f"--data_path loader: --dataset {config.dataset} is held in memory only; "
                        f"use --data_path tensor or auto")
    # --max_steps (a quick check) evaluates max_steps x batch_size images per domain at most
    eval_limit = config.max_steps * config.batch_size * world if config.max_steps else 0
    common = dict(batch_size=config.batch_size, seed=config.seed, rank=rank, world=world, augment=config.augment,
                  eval_limit=eval_limit)
    domains, skipped, data_path = {}, [], "tensor"
    for name in names:
        if dataset.loader_path:
            files = {split: dataset.files(name, workers, split) for split in splits}
            data_path = choose_data_path(config, dataset, sum(len(f.paths) for f in files.values()), device, world)
        if data_path == "loader":
            stats = dataset.sample_stats(files["train"]) if spec.normalization == "domain" else (None, None)
            transform = ImageTransform(device, spec, crop, hflip=dataset.hflip, mean=stats[0], std=stats[1],
                                       channels_last=channels_last)
            for split, part in files.items():
                domains[name, split] = dataset.loader_domain(part, device=device, num_workers=workers,
                                                             transform=transform, **common)
                skipped += part.skipped
            continue
        arrays = {split: dataset.images(name, split, workers) for split in splits}
        mean, std = domain_stats(arrays["train"][0]) if spec.normalization == "domain" else (None, None)
        transform = ImageTransform(device, spec, crop, hflip=dataset.hflip, mean=mean, std=std,
                                   channels_last=channels_last)
        for split, (images, labels, bad) in arrays.items():
            domains[name, split] = TensorDomain(f"{name}", images.to(device), labels, transform=transform, **common)
            skipped += bad
    test = "train" if dataset.transductive else "test"
    result, held = {}, {}
    for t in config.targets:
        on_target = config.train_on == "target"
        trained_on = t if on_target else config.source
        if trained_on not in held:  # split once per domain, shared by every target
            held[trained_on] = split_validation(domains[trained_on, "train"], config.source_val)
        train, source_val = held[trained_on]
        result[t] = Split(train=train, target=None if on_target else domains[t, "train"],
                          test=domains[t, test], source_test=domains[config.source, test], classes=classes,
                          source_val=source_val)
    return result, {"data_path": data_path, "skipped_images": skipped, "classes": classes,
                    "source_val_images": {name: 0 if val is None else len(val) for name, (_, val) in held.items()}}

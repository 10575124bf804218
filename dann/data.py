"""Batches for training and evaluation, sharded across processes, on the device.

Two data paths yield the same batches in the same order:
- `TensorDomain`: the decoded domain is held as uint8 on the device (GPU or CPU memory);
  a batch is an index into it. The fast path.
- `LoaderDomain`: DataLoader workers decode the files every epoch (the classic path, for
  data that does not fit in memory).
Both use `epoch_batches` for the index order and `ImageTransform` (crop, flip, normalize
on the device), so for the same weights they give the same predictions.
"""
from __future__ import annotations

import signal
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from dann.pacs import BASE_SIZE, DomainFiles, decode_image

CROP = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int,
                  rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """This process's index batches for one shuffled pass over n examples.

    Every process draws the same permutation (seeded by seed and epoch), pads it by
    wrapping around so that it splits into full batches for every process, and takes
    every world-th batch: all processes run the same number of steps.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator)
    per_step = batch_size * world
    steps = -(-n // per_step)
    order = order.repeat(-(-steps * per_step // n))[: steps * per_step]
    # (steps * world, batch) -> this rank's rows: rank, rank + world, ...
    return list(order.view(steps * world, batch_size)[rank::world])


def eval_indices(n: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """A contiguous shard of range(n): together the shards hold each index exactly once."""
    return torch.arange(n).tensor_split(world)[rank]


class ImageTransform:
    """uint8 (B, 3, 256, 256) -> normalized float (B, 3, 224, 224), on the batch's device.

    Evaluation and un-augmented training take the centre crop. Augmented training takes a
    random crop and a random horizontal flip per image, drawn from `generator`.
    """

    def __init__(self, device: torch.device, channels_last: bool = False):
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor, augment: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        margin = BASE_SIZE - CROP
        if augment:
            b = x.shape[0]
            top, left = torch.randint(0, margin + 1, (2, b, 1), device=x.device, generator=generator)
            rows = (top + torch.arange(CROP, device=x.device))[:, :, None]  # (B, 224, 1)
            cols = (left + torch.arange(CROP, device=x.device))[:, None, :]  # (B, 1, 224)
            x = x.permute(0, 2, 3, 1)[torch.arange(b, device=x.device)[:, None, None], rows, cols]
            x = x.permute(0, 3, 1, 2)  # (B, 224, 224, 3) -> (B, 3, 224, 224)
            flip = torch.rand(b, device=x.device, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        else:
            x = x[:, :, margin // 2: margin // 2 + CROP, margin // 2: margin // 2 + CROP]
        x = (x.float() - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class TensorDomain:
    """A whole domain held in memory on `device`; batches are index lookups.

    `inputs` may be uint8 images (with `transform`) or any float features (transform None:
    the synthetic tests use 2-D points).
    """

    def __init__(self, name: str, inputs: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
                 seed: int, rank: int = 0, world: int = 1, transform: ImageTransform | None = None,
                 augment: bool = False):
        self.name, self.inputs, self.labels = name, inputs, labels.to(inputs.device)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.transform, self.augment = transform, augment
        self.device = inputs.device

    def __len__(self) -> int:
        return len(self.labels)

    def steps_per_epoch(self) -> int:
        return len(epoch_batches(len(self), self.batch_size, self.seed, 0, self.rank, self.world))

    def _prepare(self, x: torch.Tensor, train: bool, key: int) -> torch.Tensor:
        if self.transform is None:
            return x
        generator = None
        if train and self.augment:
            generator = torch.Generator(self.device).manual_seed(key)
        return self.transform(x, augment=train and self.augment, generator=generator)

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled pass (this process's shard), from batch `start` on."""
        batches = epoch_batches(len(self), self.batch_size, self.seed, epoch, self.rank, self.world)
        for i in range(start, len(batches)):
            index = batches[i].to(self.device, non_blocking=True)
            yield self._prepare(self.inputs[index], True, _aug_key(self.seed, epoch, i, self.rank)), \
                self.labels[index]

    def _eval_index_batches(self) -> list[torch.Tensor]:
        """This process's eval shard in batches; none when the shard is empty (tiny domains)."""
        shard = eval_indices(len(self), self.rank, self.world)
        return list(shard.split(self.batch_size)) if len(shard) else []

    def eval_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's shard of the domain, each example once, centre crops."""
        for index in self._eval_index_batches():
            index = index.to(self.device)
            yield self._prepare(self.inputs[index], False, 0), self.labels[index]

    def eval_inputs(self, index: torch.Tensor) -> torch.Tensor:
        """Model inputs (centre crops) of the examples `index`, e.g. a sample for t-SNE."""
        return self._prepare(self.inputs[index.to(self.device)], False, 0)


class _Files(Dataset):
    def __init__(self, files: DomainFiles):
        self.files = files

    def __len__(self) -> int:
        return len(self.files.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(decode_image(self.files.paths[i])), self.files.labels[i]


class LoaderDomain(TensorDomain):
    """The same batches as TensorDomain, decoded from the files by DataLoader workers."""

    def __init__(self, files: DomainFiles, *, device: torch.device, num_workers: int,
                 **kwargs):
        self.files, self.num_workers = files, num_workers
        super().__init__(files.name, torch.empty(0, device=device),
                         torch.tensor(files.labels), **kwargs)

    def _load(self, batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # Its own generator: a DataLoader otherwise draws its workers' seed from the global RNG,
        # which would shift the dropout masks after a resume. Workers ignore SIGINT/SIGTERM:
        # the main process stops them after checkpointing (see dann.checkpoint.StopOnSignal).
        loader = DataLoader(_Files(self.files), batch_sampler=[b.tolist() for b in batches],
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False, generator=torch.Generator().manual_seed(self.seed),
                            worker_init_fn=_ignore_stop_signals)
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(self, epoch: int, start: int = 0):
        batches = epoch_batches(len(self), self.batch_size, self.seed, epoch, self.rank, self.world)
        for i, (x, y) in enumerate(self._load(batches[start:]), start):
            yield self._prepare(x, True, _aug_key(self.seed, epoch, i, self.rank)), y

    def eval_batches(self):
        for x, y in self._load(self._eval_index_batches()):
            yield self._prepare(x, False, 0), y

    def eval_inputs(self, index: torch.Tensor) -> torch.Tensor:
        x = torch.stack([torch.from_numpy(decode_image(self.files.paths[i])) for i in index.tolist()])
        return self._prepare(x.to(self.device), False, 0)


def _ignore_stop_signals(worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _aug_key(seed: int, epoch: int, batch: int, rank: int) -> int:
    """A seed per (run, epoch, batch, process): augmentation replays exactly after a resume."""
    return hash((seed, epoch, batch, rank)) & 0x7FFF_FFFF_FFFF


def cycle(domain: TensorDomain, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches, a new shuffle each pass, starting `start_step` batches in.

    The target stream of DANN: it runs independently of the source epochs, and its
    position is a function of the global step, so a resumed run continues it exactly.
    """
    per_pass = domain.steps_per_epoch()
    epoch, start = divmod(start_step, per_pass)
    while True:
        yield from domain.train_batches(epoch, start)
        epoch, start = epoch + 1, 0

"""Batches for training and evaluation, sharded across processes, on the device.

Two data paths yield the same batches in the same order:
- `TensorDomain`: the decoded domain is held as uint8 on the device (GPU or CPU memory);
  a batch is an index into it. The fast path.
- `LoaderDomain` (dann/datasets/folder.py): DataLoader workers decode the files every
  epoch (the classic path, for folder datasets that do not fit in memory).
Both use `epoch_batches` for the index order and `ImageTransform` (crop, flip, normalize
on the device, as the backbone's `InputSpec` asks: the contract between a network and the
data layer, declared here), so for the same weights they give the same predictions.
"""
from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass
from typing import Iterator

import torch

from dann import augment
from dann.errors import UserError

VIEWS = {"weak": augment.weak, "strong": augment.strong}  # the views a method may ask of its target batches
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """What a network expects: square images of side `size` (it accepts sides from
    `min_size` on), normalized one of three ways:
    'imagenet': RGB in [0, 1], minus `mean`, over `std`: the statistics the weights were
    trained with (IMAGENET_MEAN and IMAGENET_STD for torchvision's, a timm model's own);
    'caffe': BGR in [0, 255] minus `mean` (the original Caffe models); 'domain': RGB in
    [0, 1] standardized by each domain's own mean and std (networks trained from scratch)."""
    size: int
    min_size: int
    normalization: str = "imagenet"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int,
                  rank: int = 0, world: int = 1, stream: str = "") -> list[torch.Tensor]:
    """This process's index batches for one shuffled pass over n examples.

    Every process draws the same permutation (seeded by seed, epoch and the stream's name),
    pads it by wrapping around so that it splits into full batches for every process, and
    takes every world-th batch: all processes run the same number of steps. The stream's
    name (the domain's) keeps two domains of one size from being drawn in the same order:
    with files listed by class, that pairs every source batch with a target batch of the
    same classes, and target labels would leak into the adaptation through the pairing.
    """
    generator = torch.Generator().manual_seed(stream_seed(seed, epoch, stream))
    order = torch.randperm(n, generator=generator)
    per_step = batch_size * world
    steps = -(-n // per_step)
    order = order.repeat(-(-steps * per_step // n))[: steps * per_step]
    # (steps * world, batch) -> this rank's rows: rank, rank + world, ...
    return list(order.view(steps * world, batch_size)[rank::world])


def stream_seed(seed: int, epoch: int, stream: str) -> int:
    """A seed for one (run seed, epoch, stream) that is the same in every process and run."""
    return seed * 100_003 + epoch + 1_000_003 * zlib.crc32(stream.encode())


def eval_indices(n: int, rank: int = 0, world: int = 1, limit: int = 0) -> torch.Tensor:
    """A contiguous shard of range(n): together the shards hold each index exactly once.
    limit > 0: of `limit` indices spread evenly over range(n) instead (a quick check's
    evaluation: every class of a domain listed class by class)."""
    index = torch.arange(n)
    if 0 < limit < n:
        index = torch.linspace(0, n - 1, limit).round().long()
    return index.tensor_split(world)[rank]


def crop_size(spec: InputSpec, image_size: int, backbone: str, dataset: str) -> int:
    """The side of the network input cut from images of `image_size`: the backbone's own
    size when the images are larger (a centre or random crop), else the whole image, if the
    backbone accepts it. Anything else is one clear error."""
    if image_size >= spec.size:
        if spec.size < 0.75 * image_size:
            raise UserError(f"--backbone {backbone} takes {spec.size}x{spec.size} inputs, and a crop that "
                            f"size would keep little of the {image_size}x{image_size} images of --dataset "
                            f"{dataset}; use a backbone for large images (alexnet, resnet18, ...)")
        return spec.size
    if image_size < spec.min_size:
        raise UserError(f"--backbone {backbone} needs images of at least {spec.min_size}x{spec.min_size}; "
                        f"--dataset {dataset} has {image_size}x{image_size} images; use --backbone lenet "
                        f"or resnet18 for small images")
    return image_size


class ImageTransform:
    """uint8 (B, 3, S, S) -> normalized float (B, 3, C, C), on the batch's device (C = crop).

    Evaluation and un-augmented training take the centre crop. Augmented training takes a
    random crop and (where `hflip`) a random horizontal flip per image, drawn from `generator`.
    Normalization follows the backbone: x' = (x[channels] - shift) / scale, x in [0, 255]
    (see InputSpec); `mean`/`std` are the domain's own statistics for 'domain' normalization.
    """

    def __init__(self, device: torch.device, spec: InputSpec, crop: int, *, hflip: bool = True,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 channels_last: bool = False):
        if spec.normalization == "caffe":  # BGR in [0, 255] minus the Caffe mean
            shift, scale, self.bgr = spec.mean, (1.0, 1.0, 1.0), True
        else:  # RGB in [0, 1], standardized
            shift, scale, self.bgr = spec.mean, spec.std, False
            if spec.normalization == "domain" and mean is not None:
                shift, scale = mean, std
            shift, scale = [255 * v for v in shift], [255 * v for v in scale]
        self.shift = torch.tensor(shift, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        self.scale = torch.tensor(scale, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        self.crop, self.hflip, self.channels_last = crop, hflip, channels_last

    def __call__(self, x: torch.Tensor, augment: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        return self.normalize(self.crop_images(x, augment, generator))

    def crop_images(self, x: torch.Tensor, augment: bool = False,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> uint8 (B, 3, C, C): the centre crop, or with `augment` a random
        crop and flip."""
        size, crop = x.shape[-1], self.crop
        margin = size - crop
        if augment and margin:
            b = x.shape[0]
            top, left = torch.randint(0, margin + 1, (2, b, 1), device=x.device, generator=generator)
            rows = (top + torch.arange(crop, device=x.device))[:, :, None]  # (B, C, 1)
            cols = (left + torch.arange(crop, device=x.device))[:, None, :]  # (B, 1, C)
            x = x.permute(0, 2, 3, 1)[torch.arange(b, device=x.device)[:, None, None], rows, cols]
            x = x.permute(0, 3, 1, 2)  # (B, C, C, 3) -> (B, 3, C, C)
        elif margin:
            x = x[:, :, margin // 2: margin // 2 + crop, margin // 2: margin // 2 + crop]
        if augment and self.hflip:
            flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 crops -> the network's float input (as its InputSpec asks)."""
        x = x.float()
        if self.bgr:
            x = x.flip(1)  # RGB -> BGR
        x = (x - self.shift) / self.scale
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class TensorDomain:
    """A whole domain held in memory on `device`; batches are index lookups.

    `inputs` may be uint8 images (with `transform`) or any float features (transform None:
    the synthetic tests use 2-D points). A subset shares its parent's `inputs` and keeps the
    rows it holds in `rows`: the source's training split is not a second copy of its images.
    """

    def __init__(self, name: str, inputs: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
                 seed: int, rank: int = 0, world: int = 1, transform: ImageTransform | None = None,
                 augment: bool = False, eval_limit: int = 0):
        self.name, self.inputs, self.labels = name, inputs, labels.to(inputs.device)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.transform, self.augment, self.eval_limit = transform, augment, eval_limit
        self.device = inputs.device
        self.rows: torch.Tensor | None = None  # a subset's rows of `inputs` (None: all of them)

    def __len__(self) -> int:
        return len(self.labels)

    def steps_per_epoch(self) -> int:
        return len(epoch_batches(len(self), self.batch_size, self.seed, 0, self.rank, self.world, self.name))

    def _prepare(self, x: torch.Tensor, train: bool, key: int, views: tuple[str, ...] = (),
                 view_options: dict | None = None):
        """Stored inputs -> the network's: a tensor, or with `views` one tensor per view of the
        same images (dann/augment.py's 'weak' and 'strong', from the centre crop, with the
        keyword arguments `view_options`, e.g. {"translate": 0.0})."""
        if self.transform is None:  # not images (the tests' 2-D points): nothing to augment
            return tuple(x for _ in views) if views else x
        if views:
            crop = self.transform.crop_images(x)
            return tuple(self.transform.normalize(VIEWS[view](
                crop, torch.Generator(self.device).manual_seed(key + 1 + k), hflip=self.transform.hflip,
                **(view_options or {}))) for k, view in enumerate(views))
        generator = None
        if train and self.augment:
            generator = torch.Generator(self.device).manual_seed(key)
        return self.transform(x, augment=train and self.augment, generator=generator)

    def train_batches(self, epoch: int, start: int = 0, views: tuple[str, ...] = (),
                      with_index: bool = False, view_options: dict | None = None) -> Iterator[tuple]:
        """One shuffled pass (this process's shard), from batch `start` on: (inputs, labels), and
        the examples' index in the domain `with_index`. `views`: inputs are a tuple of those views
        (made with `view_options`)."""
        batches = epoch_batches(len(self), self.batch_size, self.seed, epoch, self.rank, self.world, self.name)
        for i in range(start, len(batches)):
            index = batches[i].to(self.device, non_blocking=True)
            x = self._prepare(self._stored(index), True, aug_key(self.seed, epoch, i, self.rank), views,
                              view_options)
            yield (x, self.labels[index], index) if with_index else (x, self.labels[index])

    def _eval_index_batches(self) -> list[torch.Tensor]:
        """This process's eval shard in batches; none when the shard is empty (tiny domains)."""
        shard = eval_indices(len(self), self.rank, self.world, self.eval_limit)
        return list(shard.split(self.batch_size)) if len(shard) else []

    def num_eval_batches(self) -> int:
        return len(self._eval_index_batches())

    def eval_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's shard of the domain, each example once, centre crops."""
        for index in self._eval_index_batches():
            index = index.to(self.device)
            yield self._prepare(self._stored(index), False, 0), self.labels[index]

    def eval_inputs(self, index: torch.Tensor) -> torch.Tensor:
        """Model inputs (centre crops) of the examples `index`, e.g. a sample for t-SNE."""
        return self._prepare(self._stored(index.to(self.device)), False, 0)

    def batches_of(self, index: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Model inputs (centre crops) and labels of the examples `index`, a batch at a time."""
        for part in index.split(self.batch_size):
            part = part.to(self.device)
            yield self.eval_inputs(part), self.labels[part]

    def _stored(self, index: torch.Tensor) -> torch.Tensor:
        """The stored inputs of examples `index` (this domain's numbering)."""
        return self.inputs[index if self.rows is None else self.rows[index]]

    def subset(self, index: torch.Tensor, name: str = "") -> TensorDomain:
        """The examples `index` as a domain of their own (same transform, batches and seed)."""
        part, index = copy.copy(self), index.to(self.device)
        part.rows = index if self.rows is None else self.rows[index]
        part.labels = self.labels[index]
        part.name = name or self.name
        return part

    def with_labels(self, labels: torch.Tensor) -> TensorDomain:
        """The same images under other labels (reverse validation's pseudo-labels)."""
        part = copy.copy(self)
        part.labels = labels.to(self.device)
        return part

    def whole(self) -> TensorDomain:
        """The domain as one process sees it alone: every example, not this process's shard."""
        part = copy.copy(self)
        part.rank, part.world = 0, 1
        return part


def aug_key(seed: int, epoch: int, batch: int, rank: int) -> int:
    """A seed per (run, epoch, batch, process): augmentation replays exactly after a resume."""
    return hash((seed, epoch, batch, rank)) & 0x7FFF_FFFF_FFFF


def cycle(domain: TensorDomain, start_step: int = 0, views: tuple[str, ...] = (),
          with_index: bool = False, view_options: dict | None = None) -> Iterator[tuple]:
    """Endless batches, a new shuffle each pass, starting `start_step` batches in.

    The source and target streams of the loop: the target's runs independently of the
    source's epochs, and each one's position is a function of the global step, so a resumed
    run continues it exactly.
    """
    per_pass = domain.steps_per_epoch()
    epoch, start = divmod(start_step, per_pass)
    while True:
        yield from domain.train_batches(epoch, start, views, with_index, view_options)
        epoch, start = epoch + 1, 0

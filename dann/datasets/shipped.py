"""`digits_shipped`: a real-image domain shift built only from data that installed packages
ship, so that adaptation can be measured on a CPU with no download (docs/RESULTS.md).

Source `digits`: scikit-learn's handwritten digits (`load_digits`, 1,797 8x8 images),
upscaled to white digits on black, 32x32 RGB. Target `digits_m`: other instances of the
same digits blended MNIST-M style onto patches of scikit-learn's two sample photos
(`load_sample_images`): out = |patch - digit| per channel. The two domains hold disjoint
digit instances. Built deterministically once and cached as one .npz file.
"""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from einops import rearrange, repeat
from PIL import Image

from dann.datasets import Dataset

DOMAINS = ("digits", "digits_m")
SIZE = 32
DIGIT_SIZE = 28  # the digit's side inside the 32x32 image, as in MNIST
TEST_FRACTION = 0.3  # of each domain's digits, held out as its test split
VERSION = 1  # bump when the construction changes, so old caches are not reused


def make_domains(seed: int = 0) -> dict[str, np.ndarray]:
    """Every domain's splits as arrays named '<domain>_<split>_images' (N, 3, 32, 32) uint8,
    '<domain>_<split>_labels' (N,) int64 and '<domain>_<split>_index' (N,), the rows of
    `load_digits()` they were made from. Same seed, same bytes."""
    from sklearn.datasets import load_digits, load_sample_images  # imported here: only a first build needs it

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    halves = {"digits": order[0::2], "digits_m": order[1::2]}  # disjoint instances
    photos = [np.asarray(Image.fromarray(p).resize((p.shape[1] // 2, p.shape[0] // 2), Image.BILINEAR))
              for p in load_sample_images().images]  # halved: more texture per 32x32 patch
    arrays = {}
    for domain, index in halves.items():
        n_test = int(round(len(index) * TEST_FRACTION))
        for split, part in (("test", index[:n_test]), ("train", index[n_test:])):
            images = np.stack([_upscale(digits.images[i]) for i in part])  # (N, 32, 32) in [0, 255]
            images = repeat(images, "n h w -> n c h w", c=3)
            if domain == "digits_m":
                images = np.abs(_patches(photos, len(part), rng) - images)
            arrays[f"{domain}_{split}_images"] = images.astype(np.uint8)
            arrays[f"{domain}_{split}_labels"] = digits.target[part].astype(np.int64)
            arrays[f"{domain}_{split}_index"] = part
    return arrays


def load(cache_dir: str | Path) -> dict[str, np.ndarray]:
    """The domains from <cache_dir>/digits_shipped-v<VERSION>.npz, built there on first use."""
    path = Path(cache_dir) / f"digits_shipped-v{VERSION}.npz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
        np.savez(tmp, **make_domains())
        os.replace(tmp, path)  # atomic: a concurrent run reads a whole file or builds its own
    with np.load(path) as npz:
        return dict(npz)


class ShippedDigits(Dataset):
    """The digits protocol (train splits for training, the target's test split for accuracy)
    on the shipped pair; --data_root is not used, the cache lives in --cache_dir."""

    image_size = SIZE
    hflip = False
    transductive = False
    default_pair = ("digits", "digits_m")

    def __init__(self, config):
        super().__init__(config)
        from dann.datasets.folder import default_cache_dir

        self.cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        self.root = self.cache_dir

    def domains(self) -> list[str]:
        return list(DOMAINS)

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        """Every domain's splits, read (or built) once per run."""
        return load(self.cache_dir)

    def prepare(self, domains: list[str]) -> None:
        self.arrays

    def classes(self, domains: list[str]) -> list[str]:
        return [str(digit) for digit in range(10)]

    def images(self, domain: str, split: str, workers: int):
        return (torch.from_numpy(self.arrays[f"{domain}_{split}_images"]),
                torch.from_numpy(self.arrays[f"{domain}_{split}_labels"]), [])


def _upscale(image: np.ndarray) -> np.ndarray:
    """An 8x8 digit in [0, 16] -> (32, 32) float in [0, 255], DIGIT_SIZE wide, centred."""
    small = Image.fromarray((image * (255 / 16)).astype(np.uint8))
    big = np.asarray(small.resize((DIGIT_SIZE, DIGIT_SIZE), Image.BICUBIC), dtype=np.float32)
    pad = (SIZE - DIGIT_SIZE) // 2
    return np.pad(big, pad)


def _patches(photos: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """n random 32x32 RGB patches (n, 3, 32, 32) float, drawn from the photos in turn."""
    out = np.empty((n, 3, SIZE, SIZE), dtype=np.float32)
    for i in range(n):
        photo = photos[i % len(photos)]
        y = rng.integers(0, photo.shape[0] - SIZE)
        x = rng.integers(0, photo.shape[1] - SIZE)
        out[i] = rearrange(photo[y:y + SIZE, x:x + SIZE], "h w c -> c h w")
    return out

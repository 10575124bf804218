"""The digits domains (MNIST, MNIST-M, SVHN, USPS) read from their original files, as 32x32
RGB, and the `Digits` dataset plug-in (the second homework's data).

Layout: <root>/<domain>/<files as distributed>, downloaded on first use: MNIST's IDX files
(.gz or uncompressed), SVHN's train_32x32.mat / test_32x32.mat, USPS's libsvm usps.bz2 /
usps.t.bz2 (URLs and md5s from torchvision), and MNIST-M from the Hugging Face Hub, saved
once as <root>/mnist_m/{train,test}.parquet. A decoded split is cached beside its raw files
(cache-<split>-<key>.{images,labels}.npy, the key made of the raw files' sizes and mtimes).
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import math
import os
import shutil
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from einops import rearrange, repeat
from PIL import Image

from dann.datasets import Dataset
from dann.downloads import require_online
from dann.errors import UserError, note, warn

DOMAINS = ("mnist", "mnist_m", "svhn", "usps")
SPLITS = ("train", "test")
TITLES = {"mnist": "MNIST", "mnist_m": "MNIST-M", "svhn": "SVHN", "usps": "USPS"}
SIZE = 32  # every domain is returned as SIZE x SIZE RGB
MNIST_M_HUB = "Mike0307/MNIST-M"  # a Hub id, or a local folder of {train,test}.parquet (tests)
CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused

# The files a split is distributed as, kept under <root>/<domain>/ by these names.
FILES = {
    ("mnist", "train"): ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ("mnist", "test"): ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    ("mnist_m", "train"): ("train.parquet",),
    ("mnist_m", "test"): ("test.parquet",),
    ("svhn", "train"): ("train_32x32.mat",),
    ("svhn", "test"): ("test_32x32.mat",),
    ("usps", "train"): ("usps.bz2",),
    ("usps", "test"): ("usps.t.bz2",),
}


def load(domain: str, split: str, root: str | Path, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB images (N, 3, 32, 32) and int64 labels (N,) of one split ('train' | 'test')."""
    if domain not in DOMAINS:
        raise UserError(f"unknown digits domain {domain!r}; choose from {', '.join(DOMAINS)}")
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} of {TITLES[domain]}; choose from {', '.join(SPLITS)}")
    folder = Path(root) / domain
    paths = [_find_or_download(domain, split, folder, name, download) for name in FILES[domain, split]]
    return _cached(folder, split, paths, lambda: DECODERS[domain](*paths))


class Digits(Dataset):
    """The digits protocol: train on the source's train split and the target's train split
    (unlabeled), test on the target's test split. Images are 32x32; a flip changes a digit."""

    image_size = SIZE
    hflip = False
    transductive = False
    default_pair = ("mnist_m", "svhn")
    default_root = "data/digits"

    def domains(self) -> list[str]:
        return list(DOMAINS)

    def prepare(self, domains: list[str]) -> None:
        for domain in domains:
            for split in SPLITS:
                load(domain, split, self.root, download=self.may_download)

    def classes(self, domains: list[str]) -> list[str]:
        return [str(digit) for digit in range(10)]

    def images(self, domain: str, split: str, workers: int):
        images, labels = load(domain, split, self.root, download=False)
        return torch.from_numpy(images), torch.from_numpy(labels), []


def sources(domain: str, name: str) -> tuple[list[str], str]:
    """The URLs (mirrors, in order) and md5 of one file of MNIST, SVHN or USPS, from torchvision."""
    from torchvision.datasets import MNIST, SVHN, USPS  # imported here: only a download needs it
    if domain == "mnist":
        return [mirror + name for mirror in MNIST.mirrors], dict(MNIST.resources)[name]
    url, md5 = next((url, md5) for url, file, md5 in (SVHN if domain == "svhn" else USPS).split_list.values()
                    if file == name)
    return [url], md5


# ---- finding and downloading the raw files

def _find_or_download(domain: str, split: str, folder: Path, name: str, download: bool) -> Path:
    # A .gz file may also be kept uncompressed (MNIST's IDX files often are).
    for candidate in [name] + ([name.removesuffix(".gz")] if name.endswith(".gz") else []):
        if (folder / candidate).is_file():
            return folder / candidate
        if (folder / candidate).is_dir():
            raise UserError(f"{TITLES[domain]} {split} file {folder / candidate} is a folder, not the file; move the "
                            f"file itself there (or remove the folder to download it)")
    target = folder / name
    wanted = " and ".join(f"{domain}/{n}" for n in FILES[domain, split])
    if not download:
        raise UserError(f"{TITLES[domain]} {split} file {target} not found; "
                        f"pass --data_root pointing at a folder that holds {wanted}")
    fix = (f"download it on a machine with internet and copy it to {target}, "
           f"or pass --data_root pointing at a folder that holds {wanted}")
    if domain == "mnist_m":
        _download_mnist_m(folder, fix)
    else:
        _download(domain, target, fix)
    return target


def _download(domain: str, target: Path, fix: str) -> None:
    """Download one file from the first mirror that works (md5 checked). The bytes go to a
    temporary name first, so an interrupted download never leaves a file that looks whole."""
    from torchvision.datasets.utils import download_url
    title, (urls, md5) = TITLES[domain], sources(domain, target.name)
    errors = []
    for url in urls:
        try:
            require_online(f"{title} ({target.name})", url, fix)
        except UserError as e:
            errors.append(e)
            continue
        note(f"downloading {url} to {target}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            download_url(url, str(target.parent), tmp.name, md5)
            tmp.replace(target)
            return
        except Exception as e:  # HTTP errors, a wrong md5, a full disk...
            errors.append(UserError(f"cannot download {title} from {url} ({_first_line(e)}); {fix}"))
        finally:
            tmp.unlink(missing_ok=True)
    raise errors[0]  # the main mirror's failure


def _download_mnist_m(folder: Path, fix: str) -> None:
    """Save the missing splits of MNIST_M_HUB as <folder>/<split>.parquet, each renamed into
    place once written. The Hub's files go to a scratch folder that is removed afterwards."""
    source = MNIST_M_HUB
    if not Path(source).exists():
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        require_online(f"MNIST-M ({source})", f"{endpoint}/datasets/{source}", fix)
    note(f"downloading MNIST-M ({source}) from the Hugging Face Hub to {folder}")
    scratch = folder / f".hub.{os.getpid()}.partial"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        import datasets  # imported here: only a first run without the files needs it
        try:
            splits = datasets.load_dataset(source, cache_dir=str(scratch))
        except Exception as e:  # network, auth and format errors all end the same way
            raise UserError(f"cannot download MNIST-M ({source}) from the Hugging Face Hub "
                            f"({_first_line(e)}); {fix}") from None
        for split in SPLITS:
            columns = splits[split].column_names if split in splits else []
            if not {"image", "label"} <= set(columns):
                raise UserError(f"{source} has no {split} split with image and label columns "
                                f"(splits: {', '.join(splits)}; columns: {', '.join(columns) or 'none'}); {fix}")
            if not (folder / f"{split}.parquet").exists():
                tmp = scratch / f"{split}.parquet"
                splits[split].select_columns(["image", "label"]).to_parquet(str(tmp))
                tmp.replace(folder / f"{split}.parquet")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---- decoding: each returns images (N, 3, 32, 32) uint8 and labels (N,) int64

def _decode_mnist(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _read_idx(images_path, ndim=3), _read_idx(labels_path, ndim=1)
    if len(images) != len(labels):
        raise _damaged(labels_path, f"{len(labels)} labels for the {len(images)} images of {images_path.name}")
    _check_labels(labels_path, labels)
    return _grey_to_rgb32(images), labels.astype(np.int64)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes: magic 0x0000 08 <ndim>, <ndim> big-endian int32 sizes, data."""
    try:
        with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # bad gzip header, cut-off stream, bad data
        raise _damaged(path, _first_line(e)) from None
    header = 4 + 4 * ndim
    if len(data) < header or data[:4] != bytes([0, 0, 0x08, ndim]):
        raise _damaged(path, f"not an IDX file of {ndim}-d unsigned bytes (magic {data[:4].hex() or 'missing'})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) - header != math.prod(shape):
        raise _damaged(path, f"{len(data) - header} bytes of data for the {shape} its header announces")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _decode_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises ValueError, OSError, MatReadError... for broken files
        raise _damaged(path, f"{type(e).__name__}: {_first_line(e)}") from None
    if "X" not in mat or "y" not in mat:
        raise _damaged(path, f"no X and y arrays (found: {', '.join(k for k in mat if not k.startswith('__')) or 'none'})")
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (SIZE, SIZE, 3) or y.size != x.shape[-1]:
        raise _damaged(path, f"X is {x.dtype} {x.shape} and y {y.shape}; expected uint8 (32, 32, 3, N) and (N, 1)")
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and not ((labels >= 1) & (labels <= 10)).all():
        raise _damaged(path, f"labels outside 1..10 (found {sorted(set(labels.tolist()))[:12]})")
    labels[labels == 10] = 0  # SVHN writes digit 0 as 10
    _check_labels(path, labels)
    return np.ascontiguousarray(rearrange(x, "h w c n -> n c h w")), labels


def _decode_usps(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """libsvm text: `label index:value ...` per image, labels 1..10 for digits 0..9, 16x16
    values in [-1, 1] (-1 the background), indices 1..256; a feature left out is 0."""
    images, labels = [], []
    try:
        with bz2.open(path, "rt", encoding="ascii") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        label, image = _parse_usps_line(line)
                    except ValueError as e:
                        raise _damaged(path, f"line {number}: {e}") from None
                    labels.append(label)
                    images.append(image)
    except (OSError, EOFError, ValueError) as e:  # not bz2, cut-off stream, not text
        raise _damaged(path, _first_line(e)) from None
    labels = np.array(labels, np.int64)
    _check_labels(path, labels)
    pixels = np.rint((np.array(images) + 1) * 127.5).astype(np.uint8)
    return _grey_to_rgb32(rearrange(pixels, "n (h w) -> n h w", h=16)), labels


def _parse_usps_line(line: str) -> tuple[int, np.ndarray]:
    label, *features = line.split()
    if not label.isdigit() or not 1 <= int(label) <= 10:
        raise ValueError(f"label {label[:20]!r} is not one of 1..10")
    if any(f.count(":") != 1 for f in features):
        raise ValueError(f"cannot parse {line.strip()[:40]!r}: expected `label index:value ...`")
    pairs = np.array([f.split(":") for f in features], dtype=np.float64).reshape(-1, 2)  # ValueError if not numbers
    index, value = pairs[:, 0], pairs[:, 1]
    if not ((index == np.rint(index)) & (index >= 1) & (index <= 256)).all() or np.abs(value).max(initial=0) > 1.001:
        raise ValueError("indices must be 1..256 and values in [-1, 1]")
    image = np.zeros(256, np.float64)
    image[index.astype(int) - 1] = value
    return int(label) - 1, image


def _decode_mnist_m(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A parquet file as the Hub writes it: `image` {bytes, path} (28x28 RGB PNG) and `label`."""
    import pyarrow.parquet as pq
    try:
        columns = pq.read_schema(path).names
        if not {"image", "label"} <= set(columns):
            raise _damaged(path, f"no image and label columns (found: {', '.join(columns)})")
        table = pq.read_table(path, columns=["image", "label"])
        labels = table.column("label").to_numpy().astype(np.int64)
        cells = table.column("image").to_pylist()
    except UserError:
        raise
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError... for broken files
        raise _damaged(path, f"{type(e).__name__}: {_first_line(e)}") from None
    _check_labels(path, labels)
    images = []
    for row, cell in enumerate(cells):
        try:
            data = cell["bytes"] or Path(cell["path"]).read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                images.append(_resize(image.convert("RGB")))
        except Exception as e:  # not a {bytes, path} cell, or bytes PIL cannot decode
            raise _damaged(path, f"row {row}: image cannot be decoded ({type(e).__name__})") from None
    return np.ascontiguousarray(rearrange(np.array(images), "n h w c -> n c h w")), labels


DECODERS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "mnist": _decode_mnist, "mnist_m": _decode_mnist_m, "svhn": _decode_svhn, "usps": _decode_usps}


def _resize(image: Image.Image) -> np.ndarray:
    if image.size != (SIZE, SIZE):
        image = image.resize((SIZE, SIZE), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _grey_to_rgb32(images: np.ndarray) -> np.ndarray:
    """(N, H, W) grey -> (N, 3, 32, 32), resized one by one (PIL bilinear), grey in all three channels."""
    resized = np.array([_resize(Image.fromarray(x)) for x in images]).reshape(-1, SIZE, SIZE)
    return np.ascontiguousarray(repeat(resized, "n h w -> n c h w", c=3))


def _check_labels(path: Path, labels: np.ndarray) -> None:
    if labels.size == 0:
        raise _damaged(path, "it holds no images")
    if labels.min() < 0 or labels.max() > 9:
        raise _damaged(path, f"labels outside 0..9 (found {labels.min()}..{labels.max()})")


def _damaged(path: Path, reason: str) -> UserError:
    return UserError(f"{path} is damaged ({reason}); delete it so that it is downloaded again")


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# ---- the decode cache

def _cached(folder: Path, split: str, paths: list[Path],
            decode: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """decode(), or its result saved by an earlier call on the same raw files (same names,
    sizes and mtimes). A cache is written under temporary names and renamed into place."""
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    key = hashlib.sha1(repr((CACHE_VERSION, SIZE, stats)).encode()).hexdigest()[:12]
    images_file, labels_file = (folder / f"cache-{split}-{key}.{part}.npy" for part in ("images", "labels"))
    if images_file.exists() and labels_file.exists():
        try:
            images, labels = np.load(images_file), np.load(labels_file)
            if images.shape == (len(labels), 3, SIZE, SIZE):
                return images, labels
        except (OSError, ValueError):
            pass  # an unreadable cache is decoded again and replaced
    images, labels = decode()
    try:
        for file, array in ((images_file, images), (labels_file, labels)):
            tmp = file.with_name(f".{file.name}.{os.getpid()}.partial")
            try:
                with open(tmp, "wb") as f:
                    np.save(f, array)
                tmp.replace(file)
            finally:
                tmp.unlink(missing_ok=True)
        for stale in folder.glob(f"cache-{split}-*.npy"):  # caches of files since replaced
            if key not in stale.name:
                stale.unlink(missing_ok=True)
    except OSError as e:
        warn(f"could not write the decode cache in {folder} ({e.strerror or e}); the next run decodes again")
    return images, labels

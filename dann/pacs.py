"""PACS on disk: find the images of a domain, download the dataset, decode and cache it.

Layout: <data_root>/<domain>/<class>/<image>. Every image is decoded the same way,
whichever data path trains on it (`decode_image`): RGB, shorter side resized to 256,
centre 256x256 crop, uint8 CHW. Decoded domains are cached as .npy files keyed by a
fingerprint of the image files, so a changed dataset is decoded again.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dann.errors import UserError

BASE_SIZE = 256  # decoded images are BASE_SIZE x BASE_SIZE; models see 224 crops of them
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
HUB_DATASET = "flwrlabs/pacs"
CACHE_VERSION = 1  # bump when decode_image changes, so old caches are not reused


@dataclass
class DomainFiles:
    name: str
    classes: list[str]
    paths: list[Path]
    labels: list[int]


def list_domain(root: str | Path, domain: str) -> DomainFiles:
    """The image files of one domain, labelled by their class folder (sorted class names)."""
    folder = Path(root) / domain
    if not folder.is_dir():
        present = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
        raise UserError(f"domain folder {folder} not found (found: {', '.join(present) or 'none'}); "
                        f"check --data_root")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"class folder {folder / name} holds no images; "
                            f"add its images or remove the folder from every domain")
        paths += files
        labels += [label] * len(files)
    if not classes:
        raise UserError(f"domain folder {folder} has no class folders; expected {folder}/<class>/<image>")
    return DomainFiles(domain, classes, paths, labels)


def check_same_classes(domains: list[DomainFiles]) -> list[str]:
    """The shared class list; refuses domains whose class folders differ."""
    reference = domains[0]
    for other in domains[1:]:
        if other.classes != reference.classes:
            only_ref = sorted(set(reference.classes) - set(other.classes))
            only_other = sorted(set(other.classes) - set(reference.classes))
            raise UserError(
                f"domains {reference.name} and {other.name} have different classes "
                f"(only in {reference.name}: {only_ref or 'none'}; only in {other.name}: "
                f"{only_other or 'none'}); every domain needs the same class folders")
    return reference.classes


def decode_image(path: str | Path) -> np.ndarray:
    """One image file -> uint8 array (3, BASE_SIZE, BASE_SIZE). Raises UserError if unreadable."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")  # grayscale, CMYK, RGBA and palette images too
            w, h = image.size
            scale = BASE_SIZE / min(w, h)
            new_w, new_h = max(BASE_SIZE, round(w * scale)), max(BASE_SIZE, round(h * scale))
            image = image.resize((new_w, new_h), Image.BILINEAR)
            left, top = (new_w - BASE_SIZE) // 2, (new_h - BASE_SIZE) // 2
            image = image.crop((left, top, left + BASE_SIZE, top + BASE_SIZE))
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path}: {e}; fix or delete the file, "
                        f"or pass --skip_bad_images") from None
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def fingerprint(files: DomainFiles) -> str:
    """Changes when any image file is added, removed, renamed, resized or touched."""
    digest = hashlib.sha1(f"v{CACHE_VERSION} {BASE_SIZE} {files.classes}".encode())
    for path in files.paths:
        stat = path.stat()
        digest.update(f"{path.parent.name}/{path.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dann_pacs"


def cache_path(files: DomainFiles, cache_dir: Path) -> Path:
    """<cache_dir>/<domain>-<folder>-<fingerprint>.npy. The hash of the domain folder's path
    keeps two datasets with the same domain names (say the real PACS and a test copy) from
    evicting each other's caches."""
    folder = hashlib.sha1(str(files.paths[0].parents[1].resolve()).encode()).hexdigest()[:8]
    return cache_dir / f"{files.name}-{folder}-{fingerprint(files)}.npy"


def _decode_into(npy_file: str, start: int, paths: list[Path]) -> None:
    """Decode `paths` into rows start, start+1, ... of an .npy file, in place. A worker writes
    its rows straight into the file's pages: no pixels travel back through the pool's pipe."""
    images = np.load(npy_file, mmap_mode="r+")
    for i, path in enumerate(paths, start):
        images[i] = decode_image(path)
    # No flush (msync): the pages are shared through the page cache, which every later
    # reader sees; forcing them to disk here only made the decode wait for the disk.


def decode_domain(files: DomainFiles, cache_dir: str | Path | None, workers: int) -> np.ndarray:
    """All images of a domain as one uint8 array (N, 3, 256, 256), from the cache if current.

    A cache hit is a read-only memory map of the cache file. A miss decodes into a temporary
    file beside it (in `workers` processes) and renames it into place, so a half-written
    cache is never read and concurrent runs never see each other's partial files.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_file = cache_path(files, cache_dir)
    shape = (len(files.paths), 3, BASE_SIZE, BASE_SIZE)
    if cache_file.exists():
        images = np.load(cache_file, mmap_mode="r")
        if images.shape == shape:
            return images
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{cache_file.stem}.{os.getpid()}.partial"  # never matches *.npy
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)  # header, sparse rows
    except OSError as e:
        warnings.warn(f"could not write the decode cache in {cache_dir} ({e}); "
                      f"the next run decodes again (set --cache_dir to a writable folder)")
        with tempfile.TemporaryDirectory() as scratch:
            return np.array(decode_domain(files, scratch, workers))  # in memory; scratch goes
    try:
        # About 4 chunks per worker: even load at the end, little per-task overhead.
        size = max(1, -(-len(files.paths) // (max(workers, 1) * 4)))
        chunks = [(str(tmp), i, files.paths[i: i + size]) for i in range(0, len(files.paths), size)]
        if workers > 1:
            with ProcessPoolExecutor(min(workers, len(chunks))) as pool:
                for future in [pool.submit(_decode_into, *chunk) for chunk in chunks]:
                    future.result()  # re-raises a worker's UserError here
        else:
            for chunk in chunks:
                _decode_into(*chunk)
        tmp.replace(cache_file)  # atomic
    finally:
        tmp.unlink(missing_ok=True)
    for stale in cache_dir.glob(f"{cache_file.name.rsplit('-', 1)[0]}-*.npy"):
        if stale != cache_file:
            stale.unlink(missing_ok=True)
    return np.load(cache_file, mmap_mode="r")


def download_pacs(root: str | Path, dataset: str = HUB_DATASET) -> None:
    """Write the Hub copy of PACS (`image`, `domain`, `label` columns) as <root>/<domain>/<class>/.

    `dataset` is anything `datasets.load_dataset` accepts: the Hub id, or a local folder
    of the same format (the tests use one). Files go to a temporary folder first, so an
    interrupted download never leaves a half-filled `root`.
    """
    root = Path(root)
    try:
        import datasets  # imported here: only a first run without data needs it
        table = datasets.load_dataset(dataset, split="train")
    except Exception as e:  # network, auth and format errors all end the same way
        raise UserError(
            f"--data_root {root} does not exist and downloading {dataset} from the Hugging Face "
            f"Hub failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            f"download PACS elsewhere and pass --data_root PATH to its folder") from None
    label_feature = table.features["label"]
    # Write the original encoded bytes (no re-encoding): JPEG stays JPEG, sketch PNG stays PNG.
    table = table.cast_column("image", datasets.Image(decode=False))
    tmp = root.with_name(root.name + ".partial")
    counters: dict[tuple[str, str], int] = {}
    for row in table:
        label = row["label"]
        class_name = label_feature.int2str(label) if hasattr(label_feature, "int2str") else str(label)
        key = (row["domain"], class_name)
        counters[key] = counters.get(key, 0) + 1
        data = row["image"]["bytes"] or Path(row["image"]["path"]).read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            suffix = {"JPEG": ".jpg", "PNG": ".png"}.get(image.format, f".{image.format.lower()}")
        folder = tmp / row["domain"] / class_name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{counters[key]:05d}{suffix}").write_bytes(data)
    (tmp / "SOURCE.json").write_text(json.dumps({"dataset": dataset, "images": len(table)}))
    tmp.rename(root)


def ensure_pacs(root: str | Path) -> None:
    """Download PACS into `root` if the folder does not exist."""
    if not Path(root).exists():
        print(f"{root} not found: downloading {HUB_DATASET} from the Hugging Face Hub")
        download_pacs(root)


def labels_tensor(files: DomainFiles) -> torch.Tensor:
    return torch.tensor(files.labels, dtype=torch.long)

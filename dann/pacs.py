"""PACS on disk: find the images of a domain, download the dataset, decode and cache it.

Layout: <data_root>/<domain>/<class>/<image>. Every image is decoded the same way,
whichever data path trains on it (`decode_image`): RGB, shorter side resized to 256,
centre 256x256 crop, uint8 CHW. Decoded domains are cached as .npy files keyed by a
fingerprint of the image files, so a changed dataset is decoded again. An unreadable
file stops the run with its name, or with --skip_bad_images is reported and left out; the
list of bad files is cached beside the images (`<domain>-<fingerprint>.bad.json`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dann.errors import UserError

BASE_SIZE = 256  # decoded images are BASE_SIZE x BASE_SIZE; models see 224 crops of them
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
HUB_DATASET = "flwrlabs/pacs"
CACHE_VERSION = 2  # bump when decode_image changes, so old caches are not reused


@dataclass
class DomainFiles:
    name: str
    classes: list[str]
    paths: list[Path]
    labels: list[int]
    ignored: list[Path] = field(default_factory=list)  # non-image files in class folders


class BadImage(UserError):
    """An image file that cannot be decoded; `reason` is the short cause."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"cannot read image {path}: {reason}; fix or delete the file, "
                         f"or pass --skip_bad_images to train without it")
        self.path, self.reason = Path(path), reason


def list_domain(root: str | Path, domain: str) -> DomainFiles:
    """The image files of one domain, labelled by their class folder (sorted class names)."""
    folder = Path(root) / domain
    if not folder.is_dir():
        present = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
        raise UserError(f"domain folder {folder} not found (found: {', '.join(present) or 'none'}); "
                        f"check --data_root")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    paths, labels, ignored = [], [], []
    for label, name in enumerate(classes):
        # Hidden files (.DS_Store, macOS ._x.jpg companions) and other suffixes are not images.
        # A broken link is listed, so that it is reported rather than silently missing.
        entries = sorted(p for p in (folder / name).iterdir() if p.is_file() or p.is_symlink())
        files = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
        ignored += [p for p in entries if p not in files]
        if not files:
            raise UserError(f"class folder {folder / name} holds no images; "
                            f"add its images or remove the folder from every domain")
        paths += files
        labels += [label] * len(files)
    if not classes:
        raise UserError(f"domain folder {folder} has no class folders; expected {folder}/<class>/<image>")
    return DomainFiles(domain, classes, paths, labels, ignored)


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
    """One image file -> uint8 array (3, BASE_SIZE, BASE_SIZE). Raises BadImage if unreadable.

    Grayscale, CMYK and palette images are converted to RGB; transparent pixels (RGBA, LA,
    palette with transparency) are laid on white, the background of PACS sketches.
    """
    try:
        if os.path.getsize(path) == 0:
            raise BadImage(path, "the file is empty (0 bytes)")
        with Image.open(path) as image:
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
            image = image.convert("RGB")
            w, h = image.size
            scale = BASE_SIZE / min(w, h)
            new_w, new_h = max(BASE_SIZE, round(w * scale)), max(BASE_SIZE, round(h * scale))
            image = image.resize((new_w, new_h), Image.BILINEAR)
            left, top = (new_w - BASE_SIZE) // 2, (new_h - BASE_SIZE) // 2
            image = image.crop((left, top, left + BASE_SIZE, top + BASE_SIZE))
            array = np.asarray(image, dtype=np.uint8)
    except BadImage:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise BadImage(path, f"{type(e).__name__}: {e}") from None
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _decode_or_reason(path: Path) -> tuple[np.ndarray | None, str | None]:
    try:
        return decode_image(path), None
    except BadImage as e:
        return None, e.reason


def _decode_all(files: DomainFiles, workers: int, keep: bool) -> tuple[np.ndarray | None, list]:
    """Decode every file: (the good images packed in order, or None if not `keep`;
    [(index, reason)] of the bad ones)."""
    images = np.empty((len(files.paths), 3, BASE_SIZE, BASE_SIZE), dtype=np.uint8) if keep else None
    bad, good = [], 0
    with ProcessPoolExecutor(workers) if workers > 1 else _Serial() as pool:
        for i, (array, reason) in enumerate(pool.map(_decode_or_reason, files.paths, chunksize=64)):
            if reason is not None:
                bad.append((i, reason))
            elif keep:
                images[good] = array
                good += 1
    return (images[:good] if keep else None), bad


class _Serial:
    """ProcessPoolExecutor's `map` in this process (workers <= 1)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def map(self, fn, items, chunksize=1):
        return map(fn, items)


def drop_bad(files: DomainFiles, bad: list, skip: bool) -> DomainFiles:
    """`files` without the bad ones (reported on stderr) if `skip`; else BadImage for the first."""
    if not bad:
        return files
    if not skip:
        i, reason = bad[0]
        more = f" ({len(bad) - 1} more unreadable in {files.name})" if len(bad) > 1 else ""
        raise BadImage(files.paths[i], reason + more)
    print(f"warning: --skip_bad_images: leaving out {len(bad)} unreadable image(s) of {files.name}:",
          file=sys.stderr)
    for i, reason in bad:
        print(f"  {files.paths[i]}: {reason}", file=sys.stderr)
    dropped = {i for i, _ in bad}
    keep = [i for i in range(len(files.paths)) if i not in dropped]
    return DomainFiles(files.name, files.classes, [files.paths[i] for i in keep],
                       [files.labels[i] for i in keep], files.ignored)


def check_domain(files: DomainFiles, cache_dir: str | Path | None, workers: int,
                 skip_bad: bool = False) -> DomainFiles:
    """The DataLoader path's validation pass: decode every file once before training (the
    result is cached), so that a bad file stops the run now rather than mid-epoch."""
    bad_file = _cache_file(files, cache_dir).with_suffix(".bad.json")
    try:
        bad = [tuple(b) for b in json.loads(bad_file.read_text())]
    except (OSError, ValueError):
        _, bad = _decode_all(files, workers, keep=False)
        _write_cache(bad_file, lambda tmp: tmp.write_text(json.dumps(bad)))
    return drop_bad(files, bad, skip_bad)


def fingerprint(files: DomainFiles) -> str:
    """Changes when any image file is added, removed, renamed, resized or touched."""
    digest = hashlib.sha1(f"v{CACHE_VERSION} {BASE_SIZE} {files.classes}".encode())
    for path in files.paths:
        stat = path.stat() if path.exists() else path.lstat()  # a broken link: reported later
        digest.update(f"{path.parent.name}/{path.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dann_pacs"


def _cache_file(files: DomainFiles, cache_dir: str | Path | None) -> Path:
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    return cache_dir / f"{files.name}-{fingerprint(files)}.npy"


def _write_cache(path: Path, write) -> None:
    """write(tmp_path), then rename: a half-written cache file is never read."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        domain = path.name.rsplit("-", 1)[0]
        for stale in path.parent.glob(f"{domain}-*{''.join(path.suffixes)}"):
            stale.unlink()
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}{path.suffix}")
        write(tmp)
        tmp.replace(path)
    except OSError as e:
        warnings.warn(f"could not write the decode cache in {path.parent} ({e}); "
                      f"the next run decodes again (set --cache_dir to a writable folder)")


def decode_domain(files: DomainFiles, cache_dir: str | Path | None, workers: int,
                  skip_bad: bool = False) -> tuple[np.ndarray, DomainFiles]:
    """The readable images of a domain as one uint8 array (N, 3, 256, 256), from the cache
    if current, and the files they came from (`files` less the bad ones, see drop_bad)."""
    cache_file = _cache_file(files, cache_dir)
    bad_file = cache_file.with_suffix(".bad.json")
    if cache_file.exists() and bad_file.exists():
        images = np.load(cache_file, mmap_mode="r")
        bad = [tuple(b) for b in json.loads(bad_file.read_text())]
        if images.shape == (len(files.paths) - len(bad), 3, BASE_SIZE, BASE_SIZE):
            return images, drop_bad(files, bad, skip_bad)
    images, bad = _decode_all(files, workers, keep=True)
    _write_cache(cache_file, lambda tmp: np.save(tmp, images))
    _write_cache(bad_file, lambda tmp: tmp.write_text(json.dumps(bad)))
    return images, drop_bad(files, bad, skip_bad)


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

"""Folder-of-domains datasets: <data_root>/<domain>/<class>/<image> (PACS, Office-31,
Office-Home, DomainNet...), also with the class folders one wrapper deeper, as Office-31
ships them (<domain>/images/<class>/). Find a domain's images, decode and cache them, and
the `Folder` dataset plug-in (domains and classes discovered from the folders).

Every image is decoded the same way,
whichever data path trains on it (`decode_image`): RGB, shorter side resized to 256,
centre 256x256 crop, uint8 CHW; small images (digits) at their own size instead, or at the
backbone's input size if it cannot take them (`Folder.choose_image_size`). Decoded domains are cached as .npy files keyed by a
fingerprint of the image files, so a changed dataset is decoded again (in memory, with a
warning, where the cache cannot be written: a full disk). An unreadable file stops the run
with its name, or with --skip_bad_images is reported and left out; the list of bad files is
cached beside the images (`<domain>-<fingerprint>.bad.json`). Decode workers die with their run.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import multiprocessing
import os
import signal
import socket
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from dann.data import TensorDomain, epoch_batches, aug_key
from dann.datasets import Dataset, domain_stats
from dann.errors import UserError, note, os_reason, warn
from dann.signals import die_with_parent

BASE_SIZE = 256  # decoded images are BASE_SIZE x BASE_SIZE; models see 224 crops of them
SMALL = 64  # images whose shorter side is below this are decoded at their own size, not BASE_SIZE
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
CACHE_VERSION = 2  # bump when decode_image changes, so old caches are not reused
HOST = socket.gethostname()  # in temporary names: a cache folder may be shared by several machines


@dataclass
class DomainFiles:
    name: str
    classes: list[str]
    paths: list[Path]
    labels: list[int]
    ignored: list[Path] = field(default_factory=list)  # non-image files in class folders
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (--skip_bad_images)
    size: int = BASE_SIZE  # the side images are decoded to
    nested: list[Path] = field(default_factory=list)  # folders inside class folders, not read
    split: str = ""  # which list of the domain ("" for the whole domain): part of the cache's name


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
    folder = class_root(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    paths, labels, ignored, nested = [], [], [], []
    for label, name in enumerate(classes):
        # Hidden files (.DS_Store, macOS ._x.jpg companions) and other suffixes are not images.
        # A broken link is listed, so that it is reported rather than silently missing.
        entries = sorted((folder / name).iterdir())
        inside = [p for p in entries if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")]
        entries = [p for p in entries if p.is_file() or p.is_symlink()]
        files = [p for p in entries if is_image(p)]
        ignored += [p for p in entries if p not in files]
        nested += inside
        if not files:
            found = f", only folders (e.g. {inside[0].name})" if inside else ""
            raise UserError(f"class folder {folder / name} holds no images{found}; "
                            f"add its images or remove the folder from every domain")
        paths += files
        labels += [label] * len(files)
    if not classes:
        raise UserError(f"domain folder {folder} has no class folders; expected {folder}/<class>/<image>")
    return DomainFiles(domain, classes, paths, labels, ignored, nested=nested)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def class_root(folder: Path) -> Path:
    """The folder holding a domain's class folders: the domain folder, or the one folder it
    wraps (Office-31's <domain>/images/<class>/) when it holds no images of its own and that
    folder holds folders and no images; as many wrappers deep as there are."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        inner = [p for p in entries if p.is_dir()]
        if len(inner) != 1 or any(is_image(p) for p in entries):
            return folder
        below = [p for p in inner[0].iterdir() if not p.name.startswith(".")]
        if any(is_image(p) for p in below) or not any(p.is_dir() for p in below):
            return folder  # a domain of one class
        folder = inner[0]


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


def decode_image(path: str | Path, size: int = BASE_SIZE) -> np.ndarray:
    """One image file -> uint8 array (3, size, size). Raises BadImage if unreadable.

    Grayscale, CMYK and palette images are converted to RGB; transparent pixels (RGBA, LA,
    palette with transparency) are laid on white, the background of PACS sketches.
    """
    try:
        if os.path.getsize(path) == 0:
            raise BadImage(path, "the file is empty (0 bytes)")
        with warnings.catch_warnings(record=True) as caught, Image.open(path) as image:
            warnings.simplefilter("always")  # PIL's DecompressionBombWarning, said with the file's name
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
            image = image.convert("RGB")
            w, h = image.size
            scale = size / min(w, h)
            new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
            if (new_w, new_h) != (w, h):
                image = image.resize((new_w, new_h), Image.BILINEAR)
            left, top = (new_w - size) // 2, (new_h - size) // 2
            image = image.crop((left, top, left + size, top + size))
            array = np.asarray(image, dtype=np.uint8)
        for caught_warning in caught:
            warn(f"{path}: {caught_warning.message}")
    except BadImage:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise BadImage(path, f"{type(e).__name__}: {e}") from None
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _decode_chunk(npy_file: str | None, start: int, paths: list[Path], size: int) -> list[tuple[int, str]]:
    """Decode `paths` into rows start, start+1, ... of an .npy file in place (if given) and
    return [(index, reason)] of the unreadable ones. A worker writes its rows straight into
    the file's pages: no pixels travel back through the process pool's pipe."""
    images = np.load(npy_file, mmap_mode="r+") if npy_file else None
    bad = []
    for i, path in enumerate(paths, start):
        try:
            array = decode_image(path, size)
        except BadImage as e:
            bad.append((i, e.reason))
            continue
        if images is not None:
            images[i] = array
    # No flush (msync): the pages are shared through the page cache, which every later
    # reader sees; forcing them to disk here only made the decode wait for the disk.
    return bad


def _decode_rows(start: int, paths: list[Path], size: int) -> tuple[list[tuple[int, str]], np.ndarray]:
    """Decode `paths` in memory: the unreadable ones as [(index, reason)] and the images (zeros for those)."""
    images = np.zeros((len(paths), 3, size, size), np.uint8)
    bad = []
    for row, path in enumerate(paths):
        try:
            images[row] = decode_image(path, size)
        except BadImage as e:
            bad.append((start + row, e.reason))
    return bad, images


def _chunks(files: DomainFiles, workers: int) -> list[tuple[int, list[Path]]]:
    """(start, paths) of about 4 chunks per worker: even load at the end, little per-task overhead."""
    size = max(1, -(-len(files.paths) // (max(workers, 1) * 4)))
    return [(i, files.paths[i: i + size]) for i in range(0, len(files.paths), size)]


def _in_workers(fn, calls: list[tuple], workers: int, name: str) -> list:
    """[fn(*args) for args in calls], in `workers` processes (1: in this one). A worker killed by
    the system (out of memory) is one UserError, not a BrokenProcessPool traceback."""
    if workers <= 1:
        return [fn(*args) for args in calls]
    pool = ProcessPoolExecutor(min(workers, len(calls)), initializer=_worker_started, initargs=(os.getpid(),))
    try:
        return [future.result() for future in [pool.submit(fn, *args) for args in calls]]
    except BrokenProcessPool:
        raise UserError(f"decoding {name}: a decode worker was killed by the system (out of memory?); pass "
                        f"fewer --num_workers (0: decode in this process)") from None
    except KeyboardInterrupt:  # a second Ctrl-C stops at once, not after the chunks in flight
        for worker in multiprocessing.active_children():
            worker.kill()
        raise
    finally:
        pool.shutdown(cancel_futures=True)


def _decode_all(files: DomainFiles, npy_file: str | None, workers: int) -> list[tuple[int, str]]:
    """Decode every file of the domain in `workers` processes into the .npy file (None: only to find the
    unreadable ones); the bad ones as (index, reason)."""
    calls = [(npy_file, start, paths, files.size) for start, paths in _chunks(files, workers)]
    return [b for bad in _in_workers(_decode_chunk, calls, workers, files.name) for b in bad]


def _decode_in_memory(files: DomainFiles, workers: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Every image of the domain in memory (no cache file: the pixels travel back from the workers)."""
    calls = [(start, paths, files.size) for start, paths in _chunks(files, workers)]
    parts = _in_workers(_decode_rows, calls, workers, files.name)
    images = np.concatenate([images for _, images in parts]) if parts else \
        np.zeros((0, 3, files.size, files.size), np.uint8)
    return images, [b for bad, _ in parts for b in bad]


def _worker_started(parent: int) -> None:
    """A decode worker ends with the run that started it, however the run ends (a kill -9 would
    leave it blocked on its pipe, holding its memory); SIGTERM ends it, Ctrl-C is its parent's."""
    die_with_parent(signal.SIGKILL, parent)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the run's StopOnSignal, inherited by fork
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def drop_bad(files: DomainFiles, bad: list, skip: bool, say: bool = True) -> DomainFiles:
    """`files` without the bad ones (named in one warning, if `say`) if `skip`; else a UserError naming all."""
    if not bad:
        return files
    if not skip:
        if len(bad) == 1:
            raise BadImage(files.paths[bad[0][0]], bad[0][1])
        listing = "; ".join(f"{files.paths[i]}: {reason}" for i, reason in bad)
        raise UserError(f"cannot read {len(bad)} images of {files.name}: {listing}; fix or delete "
                        f"them, or pass --skip_bad_images to train without them")
    if say:
        warn(f"--skip_bad_images: leaving out {len(bad)} unreadable image(s) of {files.name}: "
             + "; ".join(f"{files.paths[i]}: {reason}" for i, reason in bad))
    dropped = {i for i, _ in bad}
    keep = [i for i in range(len(files.paths)) if i not in dropped]
    return dataclasses.replace(files, paths=[files.paths[i] for i in keep], labels=[files.labels[i] for i in keep],
                               skipped=files.skipped + [str(files.paths[i]) for i in sorted(dropped)])


def fingerprint(files: DomainFiles) -> str:
    """Changes when any image file is added, removed, renamed, resized or touched."""
    digest = hashlib.sha1(f"v{CACHE_VERSION} {files.size} {files.classes}".encode())
    for path in files.paths:
        stat = path.stat() if path.exists() else path.lstat()  # a broken link: reported later
        digest.update(f"{path.parent.name}/{path.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dann_pacs"


def cache_path(files: DomainFiles, cache_dir: str | Path | None) -> Path:
    """<cache_dir>/<domain>[_<split>]-<folder>-<fingerprint>.npy. The hash of the domain folder's
    path keeps two datasets with the same domain names (say the real PACS and a test copy) from
    evicting each other's caches, the split two lists of one domain (DomainNet's train and test).
    The list of bad files sits beside it, as .bad.json."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = hashlib.sha1(str(files.paths[0].parents[1].resolve()).encode()).hexdigest()[:8]
    name = f"{files.name}_{files.split}" if files.split else files.name
    return cache_dir / f"{name}-{folder}-{fingerprint(files)}.npy"


def _partial(path: Path) -> Path:
    """The temporary name this process writes `path` under (never matches *.npy): it names the machine
    and the process, so that a later run can tell whether its writer still lives."""
    return path.with_name(f".{path.name}.{HOST}-{os.getpid()}.partial")


def _remove_orphans(folder: Path) -> None:
    """Temporary files that processes of this machine left when they were killed (a decode cut short
    by kill -9 leaves its whole size: 330 MB for a PACS domain)."""
    for tmp in folder.glob(f".*.{HOST}-*.partial"):
        pid = tmp.name.removesuffix(".partial").rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        pass
    return True


def _write_atomic(path: Path, text: str) -> None:
    tmp = _partial(path)
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale(cache_file: Path) -> None:
    """Older caches of the same domain folder (a changed dataset); never other datasets'."""
    for stale in cache_file.parent.glob(f"{cache_file.name.rsplit('-', 1)[0]}-*"):
        if stale.name.split(".")[0] != cache_file.stem:
            stale.unlink(missing_ok=True)


def decode_domain(files: DomainFiles, cache_dir: str | Path | None, workers: int,
                  skip_bad: bool = False, say: bool = True) -> tuple[np.ndarray, DomainFiles]:
    """The readable images of a domain as one uint8 array (N, 3, S, S), from the cache if
    current, and the files they came from (`files` less the bad ones, see drop_bad).

    A cache hit is a copy-on-write memory map of the cache file: images are read from the page
    cache as batches need them, shared by concurrent runs and never copied whole into this
    process; a write to the array stays in the process (the file is never written). A miss
    decodes into a temporary file beside it (in `workers` processes) and renames it into
    place, so a half-written cache is never read and concurrent runs never see each other's
    partial files.
    """
    cache_file = cache_path(files, cache_dir)
    bad_file = cache_file.with_suffix(".bad.json")
    shape = (len(files.paths), 3, files.size, files.size)
    if cache_file.exists() and bad_file.exists():
        images = np.load(cache_file, mmap_mode="c")
        if images.shape == shape:
            return _without_bad(images, files, json.loads(bad_file.read_text()), skip_bad, say)
    tmp = _partial(cache_file)
    start = time.time()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(cache_file.parent)
        create_reserved(tmp, shape)
    except OSError as e:
        with contextlib.suppress(OSError):  # a path under a file: ENOTDIR
            tmp.unlink(missing_ok=True)
        warn(f"cannot write the decode cache in {cache_file.parent} ({os_reason(e)}); decoding {files.name} in "
             f"memory this time; free space there or set --cache_dir to a writable folder")
        images, bad = _decode_in_memory(files, workers)
        note(f"decoded {files.name} in {time.time() - start:.1f} s")
        return _without_bad(images, files, bad, skip_bad, say)
    try:
        note(f"decoding {files.name}: {len(files.paths)} images into {cache_file.parent} (once; later runs "
             f"read the cache)")
        bad = _decode_all(files, str(tmp), workers)
        note(f"decoded {files.name} in {time.time() - start:.1f} s")
        tmp.replace(cache_file)  # atomic
        try:
            _write_atomic(bad_file, json.dumps(bad))  # a cache counts once its bad list exists
        except OSError as e:
            warn(f"cannot write {bad_file} ({os_reason(e)}); the next run decodes {files.name} again")
    finally:
        tmp.unlink(missing_ok=True)
    _remove_stale(cache_file)
    return _without_bad(np.load(cache_file, mmap_mode="c"), files, bad, skip_bad, say)


def create_reserved(path: Path, shape: tuple[int, ...]) -> None:
    """An .npy file of uint8 `shape` whose every block is allocated now. numpy leaves the rows sparse:
    on a full disk the failure would come later, as SIGBUS in the worker writing a row through the
    memory map (a process killed, no message); reserved, it is ENOSPC here."""
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)  # the header, sparse rows
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)


def _without_bad(images: np.ndarray, files: DomainFiles, bad: list, skip: bool, say: bool = True):
    kept = drop_bad(files, [tuple(b) for b in bad], skip, say)
    if bad:  # rows of unreadable files hold zeros: leave them out
        dropped = {i for i, _ in bad}
        images = images[[i for i in range(len(images)) if i not in dropped]]
    return images, kept


def check_domain(files: DomainFiles, cache_dir: str | Path | None, workers: int,
                 skip_bad: bool = False, say: bool = True) -> DomainFiles:
    """The DataLoader path's validation pass: decode every file once before training (the
    list of bad files is cached), so that a bad file stops the run now rather than mid-epoch."""
    bad_file = cache_path(files, cache_dir).with_suffix(".bad.json")
    try:
        bad = json.loads(bad_file.read_text())
    except (OSError, ValueError):
        bad = _decode_all(files, None, workers)
        try:
            bad_file.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(bad_file, json.dumps(bad))
        except OSError:
            pass  # only the validation is lost: the next run checks the files again
    return drop_bad(files, [tuple(b) for b in bad], skip_bad, say)


def labels_tensor(files: DomainFiles) -> torch.Tensor:
    return torch.tensor(files.labels, dtype=torch.long)


# ---------------------------------------------------------------------------- the decoding path

class _Files(TorchDataset):
    def __init__(self, files: DomainFiles):
        self.files = files

    def __len__(self) -> int:
        return len(self.files.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(decode_image(self.files.paths[i], self.files.size)), self.files.labels[i]


class LoaderDomain(TensorDomain):
    """The same batches as TensorDomain, decoded from the files by DataLoader workers."""

    def __init__(self, files: DomainFiles, *, device: torch.device, num_workers: int, **kwargs):
        self.files, self.num_workers = files, num_workers
        super().__init__(files.name, torch.empty(0, device=device), torch.tensor(files.labels), **kwargs)

    def _load(self, batches: list[torch.Tensor]):
        # Its own generator: a DataLoader otherwise draws its workers' seed from the global RNG,
        # which would shift the dropout masks after a resume. Workers ignore SIGINT/SIGTERM:
        # the main process stops them after checkpointing (see dann.checkpoint.StopOnSignal).
        loader = DataLoader(_Files(self.files), batch_sampler=[b.tolist() for b in batches],
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False, generator=torch.Generator().manual_seed(self.seed),
                            worker_init_fn=_ignore_stop_signals)
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(self, epoch: int, start: int = 0, views: tuple[str, ...] = (), with_index: bool = False,
                      view_options: dict | None = None):
        batches = epoch_batches(len(self), self.batch_size, self.seed, epoch, self.rank, self.world, self.name)
        for i, (x, y) in enumerate(self._load(batches[start:]), start):
            x = self._prepare(x, True, aug_key(self.seed, epoch, i, self.rank), views, view_options)
            yield (x, y, batches[i].to(self.device)) if with_index else (x, y)

    def eval_batches(self):
        for x, y in self._load(self._eval_index_batches()):
            yield self._prepare(x, False, 0), y

    def batches_of(self, index: torch.Tensor):
        for x, y in self._load(list(index.cpu().split(self.batch_size))):
            yield self._prepare(x, False, 0), y

    def eval_inputs(self, index: torch.Tensor) -> torch.Tensor:
        x = torch.stack([torch.from_numpy(decode_image(self.files.paths[i], self.files.size))
                         for i in index.tolist()])
        return self._prepare(x.to(self.device), False, 0)

    def subset(self, index: torch.Tensor, name: str = "") -> LoaderDomain:
        rows = index.tolist()
        part = self.with_labels(self.labels[index.to(self.labels.device)])
        part.files = dataclasses.replace(part.files, paths=[self.files.paths[i] for i in rows],
                                         labels=[self.files.labels[i] for i in rows])
        part.name = name or self.name
        return part

    def with_labels(self, labels: torch.Tensor) -> LoaderDomain:
        part = copy.copy(self)
        part.labels = labels.to(self.device)
        part.files = dataclasses.replace(self.files, labels=labels.tolist())  # what the workers yield
        return part


def _ignore_stop_signals(worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ---------------------------------------------------------------------------- the plug-in

class Folder(Dataset):
    """Any <data_root>/<domain>/<class>/<image> tree; never downloads. Transductive, like PACS.
    Subclasses name their domains' folders (`folder_of`) and may list a domain's images per
    split (`listing`)."""

    image_size = BASE_SIZE
    loader_path = True

    def __init__(self, config):
        super().__init__(config)
        self._listings: dict[str, DomainFiles] = {}
        self._skips_said: set[tuple[str, str]] = set()  # (domain, split): its unreadable files were named

    def _say_skips(self, domain: str, split: str) -> bool:
        """Whether to name the unreadable files of a list now: once a run (it is validated, then decoded)."""
        said = (domain, split) in self._skips_said
        self._skips_said.add((domain, split))
        return not said

    def check_root(self) -> None:
        if not self.root.is_dir():
            raise UserError(f"--data_root {self.root or '(empty)'}: no such folder; give the folder that "
                            f"holds <domain>/<class>/<image>")

    def domains(self) -> list[str]:
        self.check_root()
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def folder_of(self, domain: str) -> str:
        """The name of the domain's folder under the root."""
        return domain

    def listing(self, name: str, split: str = "train") -> DomainFiles:
        """The domain's images; every split is the whole domain here (transductive)."""
        if name not in self._listings:
            files = dataclasses.replace(list_domain(self.root, self.folder_of(name)), name=name)
            where = self.root / self.folder_of(name)
            if files.ignored:
                note(f"ignored {len(files.ignored)} non-image file(s) in {where}, e.g. {files.ignored[0]}")
            if files.nested:
                note(f"skipped {len(files.nested)} folder(s) inside the class folders of {where}, e.g. "
                     f"{files.nested[0]}: only the images directly in a class folder are read")
            self._listings[name] = files
        return self._listings[name]

    def classes(self, domains: list[str]) -> list[str]:
        return check_same_classes([self.listing(d) for d in domains])

    def choose_image_size(self, spec, domains: list[str]) -> int:
        """BASE_SIZE, unless the images are small (shorter side below SMALL, e.g. digits): then
        their own size if the backbone takes it, else the backbone's input size."""
        native = max(shorter_side(p) for d in domains for p in sample_paths(self.listing(d).paths))
        if native >= SMALL:
            self.image_size = BASE_SIZE
        else:
            self.image_size = native if native >= spec.min_size else spec.size
        return self.image_size

    def images(self, domain: str, split: str, workers: int):
        files = dataclasses.replace(self.listing(domain, split), size=self.image_size)
        images, kept = decode_domain(files, self.config.cache_dir, workers, self.config.skip_bad_images,
                                     self._say_skips(domain, split))
        return torch.from_numpy(images), labels_tensor(kept), kept.skipped  # the memory map itself

    def loader_domain(self, files: DomainFiles, **kwargs) -> LoaderDomain:
        return LoaderDomain(files, **kwargs)

    def sample_stats(self, files: DomainFiles, n: int = 256) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Statistics of up to n of the domain's images, evenly spread."""
        step = max(1, len(files.paths) // n)
        sample = files.paths[::step][:n]
        return domain_stats(torch.stack([torch.from_numpy(decode_image(p, files.size)) for p in sample]))

    def files(self, domain: str, workers: int, split: str = "train") -> DomainFiles:
        files = dataclasses.replace(self.listing(domain, split), size=self.image_size)
        return check_domain(files, self.config.cache_dir, workers, self.config.skip_bad_images,
                            self._say_skips(domain, split))


def sample_paths(paths: list[Path]) -> list[Path]:
    """The first, middle and last file: enough to tell a folder of digits from one of photos."""
    return [paths[0], paths[len(paths) // 2], paths[-1]] if paths else []


def shorter_side(path: Path) -> int:
    """The shorter side of an image, from its header (0 if unreadable: reported when decoded)."""
    try:
        with Image.open(path) as image:
            return min(image.size)
    except Exception:  # noqa: BLE001 -- a bad file is named, with its reason, by the decode
        return 0

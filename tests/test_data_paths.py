"""The two data paths (tensor, DataLoader) agree; each backbone's input (crop, normalization,
BGR); the decode cache; sharding; the benchmark's tiny mode."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, write_tiny_pacs
from dann import datasets
from dann.backbones import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from dann.config import TrainConfig
from dann.data import ImageTransform, TensorDomain, crop_size, epoch_batches, eval_indices
from dann.datasets import folder as pacs
from dann.datasets.folder import LoaderDomain
from dann.errors import UserError
from dann.methods import build

ALEXNET = InputSpec(size=224, min_size=63)
CAFFE = InputSpec(size=227, min_size=39, normalization="caffe", mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0))


def imagenet_transform(**kwargs):
    return ImageTransform(torch.device("cpu"), ALEXNET, 224, **kwargs)


def both_paths(root, name, *, augment, num_workers=0, batch_size=4, **kwargs):
    files = pacs.list_domain(root, name)
    cpu = torch.device("cpu")
    common = dict(batch_size=batch_size, seed=3, transform=imagenet_transform(), augment=augment, **kwargs)
    images = torch.from_numpy(pacs.decode_domain(files, root.parent / "cache", workers=1)[0].copy())
    return (TensorDomain(name, images, pacs.labels_tensor(files), **common),
            LoaderDomain(files, device=cpu, num_workers=num_workers, **common))


@pytest.mark.parametrize("augment", [False, True])
def test_tensor_and_loader_paths_give_the_same_inputs_and_predictions(tiny_pacs, augment):
    tensor, loader = both_paths(tiny_pacs, "photo", augment=augment, num_workers=2)
    torch.manual_seed(0)
    model = build(TrainConfig(backbone="alexnet", pretrained="none"), 2).eval()  # no dropout: outputs depend on inputs only
    for epoch in (0, 1):
        pairs = list(zip(tensor.train_batches(epoch), loader.train_batches(epoch), strict=True))
        assert len(pairs) == tensor.steps_per_epoch() == 2
        for (x_a, y_a), (x_b, y_b) in pairs:
            assert x_a.shape == (4, 3, 224, 224)
            assert torch.equal(x_a, x_b) and torch.equal(y_a, y_b)
            with torch.no_grad():
                logits_a, logits_b = model(x_a), model(x_b)
            assert torch.equal(logits_a.argmax(1), logits_b.argmax(1))
            torch.testing.assert_close(logits_a, logits_b, rtol=0, atol=0)
    evals = list(zip(tensor.eval_batches(), loader.eval_batches(), strict=True))
    assert sum(len(y_a) for (_, y_a), _ in evals) == len(tensor) == 6
    for (x_a, y_a), (x_b, y_b) in evals:
        assert torch.equal(x_a, x_b) and torch.equal(y_a, y_b)
    sample = torch.tensor([5, 0, 3])  # the t-SNE's sampled inputs: the same on both paths
    assert torch.equal(tensor.eval_inputs(sample), loader.eval_inputs(sample))
    assert torch.equal(tensor.eval_inputs(sample)[1], evals[0][0][0][0])


def test_augmentation_crops_and_flips_and_replays():
    images = torch.arange(2 * 3 * 256 * 256, dtype=torch.int64).remainder(251).to(torch.uint8)
    images = images.view(2, 3, 256, 256).repeat(8, 1, 1, 1)  # 16 images
    transform = imagenet_transform()
    a = transform(images, augment=True, generator=torch.Generator().manual_seed(1))
    b = transform(images, augment=True, generator=torch.Generator().manual_seed(1))
    centre = transform(images)
    assert torch.equal(a, b)  # same key, same crops and flips
    assert not torch.equal(a, centre)
    # Every augmented image is some 224 crop of its source, maybe flipped.
    raw = (a * transform.scale + transform.shift).round().to(torch.uint8)
    for i in range(16):
        assert any(is_a_crop(images[i], x) for x in (raw[i], raw[i].flip(-1))), f"image {i} is not a (flipped) crop"


def is_a_crop(image: torch.Tensor, crop: torch.Tensor) -> bool:
    """Whether `crop` (3, c, c) is a window of `image` (3, s, s): candidates by the first row, then whole."""
    c = crop.shape[-1]
    rows = image[0].unfold(1, c, 1)  # (s, s - c + 1, c): every row segment of channel 0
    for top, left in (rows == crop[0, 0]).all(-1).nonzero().tolist():
        if top + c <= image.shape[-1] and torch.equal(image[:, top:top + c, left:left + c], crop):
            return True
    return False


def test_each_backbone_gets_its_own_input():
    """ImageNet statistics on RGB for torchvision weights; BGR in [0, 255] minus the Caffe mean,
    227 crop, for the Caffe AlexNet; the domain's own statistics for networks trained from scratch."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8, generator=g)
    centre = images[:, :, 16:240, 16:240].float() / 255
    expected = (centre - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(imagenet_transform()(images), expected)

    caffe = ImageTransform(torch.device("cpu"), CAFFE, crop_size(CAFFE, 256, "alexnet_caffe", "pacs"))(images)
    crop = images[:, :, 14:241, 14:241].float()  # (256 - 227) // 2 = 14
    assert caffe.shape == (2, 3, 227, 227)
    assert torch.equal(caffe[:, 0], crop[:, 2] - 104.0) and torch.equal(caffe[:, 2], crop[:, 0] - 123.0)  # B first

    lenet = InputSpec(size=32, min_size=32, normalization="domain")
    digits = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)
    mean, std = datasets.domain_stats(digits)
    x = ImageTransform(torch.device("cpu"), lenet, 32, mean=mean, std=std)(digits)
    assert x.shape == (4, 3, 32, 32)
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std((0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)


def test_input_sizes_a_backbone_cannot_take_are_one_clear_error():
    assert crop_size(ALEXNET, 256, "alexnet", "pacs") == 224
    resnet = InputSpec(size=224, min_size=32)
    assert crop_size(resnet, 32, "resnet18", "digits") == 32  # small images used whole
    with pytest.raises(UserError, match="alexnet needs images of at least 63x63; --dataset digits has 32x32"):
        crop_size(ALEXNET, 32, "alexnet", "digits")
    with pytest.raises(UserError, match="lenet takes 32x32 inputs"):
        crop_size(InputSpec(size=32, min_size=32, normalization="domain"), 256, "lenet", "pacs")


def decode_counter(monkeypatch):
    calls = []
    real = pacs.decode_image

    def counted(path, *size):
        calls.append(path)
        return real(path, *size)

    monkeypatch.setattr(pacs, "decode_image", counted)
    return calls


def test_decode_cache_is_reused_and_rebuilt_when_a_file_changes(tiny_pacs, tmp_path, monkeypatch):
    calls = decode_counter(monkeypatch)
    files = pacs.list_domain(tiny_pacs, "photo")
    first = np.array(pacs.decode_domain(files, tmp_path / "cache", workers=1)[0])
    assert len(calls) == 6
    again, _ = pacs.decode_domain(pacs.list_domain(tiny_pacs, "photo"), tmp_path / "cache", workers=1)
    assert len(calls) == 6 and np.array_equal(first, again)  # no decode: the cache
    assert isinstance(again, np.memmap)  # read in place, not copied whole into memory
    again[0] = 0  # copy-on-write: the write stays in this process, the cache keeps the image
    assert np.array_equal(pacs.decode_domain(files, tmp_path / "cache", workers=1)[0][0], first[0])

    stat = files.paths[0].stat()  # touched: same bytes, new mtime
    os.utime(files.paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    pacs.decode_domain(pacs.list_domain(tiny_pacs, "photo"), tmp_path / "cache", workers=1)
    assert len(calls) == 12

    changed = files.paths[3]  # replaced: new pixels must show up in the cache
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(changed)
    rebuilt, _ = pacs.decode_domain(pacs.list_domain(tiny_pacs, "photo"), tmp_path / "cache", workers=2)
    assert np.array_equal(rebuilt[3], pacs.decode_image(changed)) and not np.array_equal(rebuilt[3], first[3])
    assert np.array_equal(rebuilt[:3], first[:3])
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(cached) == 2 and cached[0].endswith(".bad.json") and cached[1].endswith(".npy")
    # stale caches and partial files gone; the bad-file list (empty here) sits beside the images


def test_two_datasets_share_a_cache_dir_without_evicting_each_other(tmp_path, monkeypatch):
    calls = decode_counter(monkeypatch)
    a = write_tiny_pacs(tmp_path / "a" / "PACS", domains=("photo",), seed=1)
    b = write_tiny_pacs(tmp_path / "b" / "PACS", domains=("photo",), seed=2)
    for root in (a, b, a, b):
        pacs.decode_domain(pacs.list_domain(root, "photo"), tmp_path / "cache", workers=1)
    assert len(calls) == 12  # each decoded once


def test_decode_with_workers_equals_decode_one_by_one(tiny_pacs, tmp_path):
    files = pacs.list_domain(tiny_pacs, "art_painting")
    pooled, _ = pacs.decode_domain(files, tmp_path / "pooled", workers=3)
    assert pooled.shape == (6, 3, 256, 256) and pooled.dtype == np.uint8
    assert np.array_equal(pooled, np.stack([pacs.decode_image(p) for p in files.paths]))


def test_decode_error_in_a_worker_is_one_user_error(tiny_pacs, tmp_path):
    files = pacs.list_domain(tiny_pacs, "photo")
    files.paths[4].write_bytes(b"not a jpeg")
    with pytest.raises(pacs.UserError, match=f"cannot read image {files.paths[4]}"):
        pacs.decode_domain(files, tmp_path / "cache", workers=2)
    # no partial file left; the complete cache records the bad file for a --skip_bad_images rerun
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("n", [7, 64, 101])
def test_sharding_covers_eval_once_and_gives_equal_train_steps(n, world):
    shards = [eval_indices(n, rank, world) for rank in range(world)]
    assert torch.equal(torch.cat(shards), torch.arange(n))  # each example exactly once
    batch = 8
    for epoch in (0, 1):
        per_rank = [epoch_batches(n, batch, 5, epoch, rank, world) for rank in range(world)]
        assert len({len(b) for b in per_rank}) == 1  # every rank runs the same number of steps
        assert all(len(b) == batch for batches in per_rank for b in batches)
        seen = torch.cat([b for batches in per_rank for b in batches])
        assert set(seen.tolist()) == set(range(n))  # the epoch covers everything
        assert len(seen) - n < batch * world  # padding by wrap-around: less than one global step
        again = [epoch_batches(n, batch, 5, epoch, rank, world) for rank in range(world)]
        assert all(torch.equal(x, y) for p, q in zip(per_rank, again) for x, y in zip(p, q))
    assert not torch.equal(epoch_batches(n, batch, 5, 0)[0], epoch_batches(n, batch, 5, 1)[0])


def test_sharded_domains_evaluate_each_image_once(tiny_pacs):
    labels = []
    for rank in range(3):
        tensor, loader = both_paths(tiny_pacs, "photo", augment=False, rank=rank, world=3, batch_size=1)
        assert tensor.steps_per_epoch() == loader.steps_per_epoch() == 2
        ys = [y for _, y in tensor.eval_batches()]
        assert [y.tolist() for y in ys] == [y.tolist() for _, y in loader.eval_batches()]
        labels += torch.cat(ys).tolist()
    assert sorted(labels) == sorted(pacs.list_domain(tiny_pacs, "photo").labels)


def test_auto_picks_the_tensor_path_for_pacs_on_cpu(monkeypatch):
    pacs_data = datasets.build(TrainConfig())
    photo_and_art = 1670 + 2048
    cpu = torch.device("cpu")
    assert datasets.choose_data_path(TrainConfig(), pacs_data, photo_and_art, cpu, 1) == "tensor"  # 0.73 GB

    class Memory:  # a machine with 1 GB free: photo + art_painting (0.73 GB) is over half of it
        available = 1 << 30

    monkeypatch.setattr("dann.datasets.psutil.virtual_memory", lambda: Memory)
    assert datasets.choose_data_path(TrainConfig(), pacs_data, photo_and_art, cpu, 1) == "loader"
    assert datasets.choose_data_path(TrainConfig(data_path="tensor"), pacs_data, photo_and_art, cpu, 1) == "tensor"


@pytest.mark.slow
def test_benchmark_tiny_mode_prints_its_table(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_dann.py"), "--tiny",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("| a | loader |", "| b | tensor |", "| c | tensor |", "| floor | on device |",
                "(b) vs (a)", "first decode", "train_dann.py, warm cache", "with the former per-step host sync",
                "| K = 1 |", "| K = 2 |"):
        assert row in done.stdout, row
    report = json.loads((tmp_path / "bench_dann.json").read_text())
    assert set(report["cases"]) == {"a", "b", "c", "floor"}
    assert report["cases"]["floor"]["steps_per_s_host_sync"] > 0
    assert [c["k"] for c in report["concurrent"]] == [1, 2] and report["concurrent"][1]["images"] > 0
    assert report["concurrent"][0]["backbone"] == "resnet18"  # two AlexNets at once: 4 GB of a CPU machine
    assert all(c["images_per_s"] > 0 and c["s_per_epoch"] > 0 and c["peak_memory"] > 0
               for c in report["cases"].values())
    assert report["decode"]["images"] == 8 and report["full_runs"][0]["data_path"] == "tensor"


def test_a_subset_reads_its_parents_images_without_a_copy():
    images = torch.arange(10).view(10, 1).float() * torch.ones(10, 3)
    domain = TensorDomain("photo", images, torch.arange(10), batch_size=2, seed=0)
    part = domain.subset(torch.tensor([7, 2, 5, 9]))
    inner = part.subset(torch.tensor([3, 0]))  # a subset of a subset: rows 9 and 7
    assert part.inputs is images and inner.inputs is images  # the source's training split: no second copy
    assert [y.tolist() for _, y in inner.eval_batches()] == [[9, 7]]
    assert torch.equal(inner.eval_inputs(torch.tensor([1, 0])), images[[7, 9]])
    assert all(torch.equal(x[:, 0], y.float()) for x, y in part.train_batches(0))  # images and labels still pair up
    assert sorted(torch.cat([y for _, y in part.train_batches(1)]).tolist()) == [2, 5, 7, 9]


def test_two_domains_of_one_size_are_shuffled_in_different_orders():
    """With files listed class by class, equal orders would pair every source batch with a
    target batch of the same classes: target labels leaking into the adaptation."""
    labels = torch.arange(40) // 4  # 10 classes, listed by class
    source = TensorDomain("mnist", torch.zeros(40, 2), labels, batch_size=8, seed=3)
    target = TensorDomain("mnist_m", torch.zeros(40, 2), labels, batch_size=8, seed=3)
    for epoch in (0, 1):
        s = [y for _, y in source.train_batches(epoch)]
        t = [y for _, y in target.train_batches(epoch)]
        assert not all(torch.equal(a, b) for a, b in zip(s, t))
        assert sorted(torch.cat(s).tolist()) == sorted(torch.cat(t).tolist()) == sorted(labels.tolist())
    again = TensorDomain("mnist_m", torch.zeros(40, 2), labels, batch_size=8, seed=3)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(target.train_batches(1), again.train_batches(1)))


def test_a_folder_of_small_pngs_trains_at_their_own_size(tmp_path, capsys):
    """32x32 digits in <root>/<domain>/<class>/: decoded at 32x32 (not 256) for lenet, upscaled
    to the backbone's input for one that needs larger images."""
    from dann.cli import main
    from dann.config import make_config
    from dann.datasets.folder import Folder

    rng = np.random.default_rng(0)
    for domain in ("mnist", "svhn"):
        for digit in ("0", "1"):
            (tmp_path / "digits" / domain / digit).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    tmp_path / "digits" / domain / digit / f"{i}.png")
    folder = Folder(make_config(dataset="folder", data_root=str(tmp_path / "digits")))
    assert folder.choose_image_size(InputSpec(size=32, min_size=32), ["mnist", "svhn"]) == 32
    assert folder.choose_image_size(InputSpec(size=224, min_size=63), ["mnist", "svhn"]) == 224
    out = tmp_path / "run"
    assert main("dann", ["--dataset", "folder", "--data_root", str(tmp_path / "digits"), "--source", "mnist",
                         "--target", "svhn", "--backbone", "lenet", "--pretrained", "none", "--cpu",
                         "--batch_size", "4", "--epochs", "1", "--no-tsne", "--cache_dir", str(tmp_path / "cache"),
                         "--output_dir", str(out)]) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["num_target_eval"] == 8 and results["steps"] == 2
    assert [np.load(p, mmap_mode="r").shape for p in sorted((tmp_path / "cache").glob("*.npy"))] == [(8, 3, 32, 32)] * 2


def test_cpu_step_benchmark_times_every_case(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_cpu_step.py"), "--steps", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("| fp32 | off | no |", "| fp32 | on | no |", "| bf16 | off | no |", "| bf16 | on | no |"):
        assert row in done.stdout, row

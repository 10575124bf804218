"""Whole runs on the real PACS: the README's smoke command, every method through the same
loop, and two CPU processes."""
import json
import os
import subprocess
import sys

import pytest
from tiny_train import register

from conftest import ROOT
from dann import plugins
from dann.cli import main

RESULT_KEYS = {"method", "config", "epochs", "target_acc", "best_target_acc", "best_epoch",
               "source_acc", "num_target_eval", "num_source_eval", "steps", "wall_seconds",
               "train_seconds", "num_processes", "mixed_precision", "data_path", "classes",
               "confusion_matrix", "per_process_batch", "global_batch"}


def train(*command, launcher=(sys.executable,), **env):
    result = subprocess.run([*launcher, *command, "--cpu", "--pretrained", "none"], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, **env}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_dann_alexnet_steps_on_real_pacs_write_complete_results(real_pacs, pacs_cache, tmp_path):
    out = tmp_path / "run"
    result = train(str(ROOT / "train_dann.py"), "--data_root", str(real_pacs), "--cache_dir", str(pacs_cache),
                   "--output_dir", str(out), "--iters_per_epoch", "2", "--batch_size", "8", "--tsne_samples", "50",
                   "--recipe", "homework",
                   "--select_rules", "cheap")  # reverse validation's AlexNet copy: 1.5 GB more, tested on tiny models
    results = json.loads((out / "results.json").read_text())
    assert RESULT_KEYS <= results.keys()
    assert results["num_target_eval"] == 2048 and results["num_source_eval"] == 1670
    assert results["steps"] == 2 and results["method"] == "dann" and results["mixed_precision"] == "no"
    assert results["config"]["alpha"] == 0.1 and results["config"]["target"] == "art_painting"
    assert results["config"]["epochs"] == 1  # the CPU's first look
    epoch = results["epochs"][-1]
    for key in ("train/class_loss", "train/domain_loss", "train/domain_acc", "train/alpha",
                "eval/source_acc", "eval/target_acc"):
        assert key in epoch, key
    assert 0 <= results["target_acc"] <= 1 and results["target_acc"] == epoch["eval/target_acc"]
    assert sum(map(sum, results["confusion_matrix"])) == 2048
    assert (out / "model.safetensors").stat().st_size > 200e6  # AlexNet + G_d weights
    assert "epoch 1/1" in result.stdout and (out / "tsne_by_domain.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("method", list(plugins.METHODS))
def test_every_method_trains_on_real_pacs(method, real_pacs, pacs_cache, tmp_path, monkeypatch, capsys):
    """The real images through each method (with the tiny backbone: the model is not the point)."""
    registered = set(plugins.METHODS)
    register(monkeypatch)
    out = tmp_path / method
    flags = ["--cpu", "--backbone", "tiny", "--pretrained", "none", "--data_root", str(real_pacs),
             "--cache_dir", str(pacs_cache), "--output_dir", str(out), "--iters_per_epoch", "3", "--batch_size", "16",
             "--no-tsne", "--target", "sketch"]
    flags += ["--bottleneck_dim", "8"] if method == "adabn" else []  # AdaBN needs batch norm
    script = "baseline" if method == "baseline" else "dann"
    assert main(script, flags + ([] if method == "baseline" else ["--method", method])) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == results["config"]["method"] == method
    assert results["num_target_eval"] == 3929 and results["steps"] == 3
    monkeypatch.undo()
    assert set(plugins.METHODS) == registered and all(isinstance(p.target, str) for p in plugins.METHODS.values())


@pytest.mark.slow
def test_two_processes_count_every_target_image_once(real_pacs, pacs_cache, tmp_path):
    out = tmp_path / "ddp"
    train(str(ROOT / "tests" / "tiny_train.py"), "dann", "--backbone", "tiny", "--data_root", str(real_pacs),
          "--cache_dir", str(pacs_cache), "--output_dir", str(out), "--iters_per_epoch", "2", "--batch_size", "8",
          "--no-tsne", "--select_rules", "none",  # the counts are the point; each process holds both domains
          launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"))
    results = json.loads((out / "results.json").read_text())
    assert results["num_processes"] == 2 and results["global_batch"] == 16
    assert results["num_target_eval"] == 2048 and results["num_source_eval"] == 1670


@pytest.mark.slow
def test_global_batch_scope_splits_the_batch_over_processes(tiny_pacs, tmp_path):
    out = tmp_path / "global"
    train(str(ROOT / "tests" / "tiny_train.py"), "dann", "--backbone", "tiny", "--data_root", str(tiny_pacs),
          "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(out), "--epochs", "1", "--batch_size", "4",
          "--batch_scope", "global", "--no-tsne",
          launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"))
    results = json.loads((out / "results.json").read_text())
    assert (results["per_process_batch"], results["global_batch"]) == (2, 4)
    assert results["steps"] == 2  # 6 images, 4 per step over both processes: 2 steps, as on one process

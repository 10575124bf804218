"""Whole runs of the entry points: the real PACS, the baseline, and two CPU processes."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, write_tiny_pacs

RESULT_KEYS = {"method", "config", "epochs", "target_acc", "best_target_acc", "best_epoch",
               "source_acc", "num_target_eval", "num_source_eval", "steps", "wall_seconds",
               "train_seconds", "num_processes", "mixed_precision", "data_path", "classes"}


def train(script, *args, launcher=(sys.executable,), **env):
    result = subprocess.run([*launcher, script, "--cpu", "--pretrained", "none", *args], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_dann_steps_on_real_pacs_write_complete_results(real_pacs, pacs_cache, tmp_path):
    out = tmp_path / "run"
    result = train("train_dann.py", "--data_root", str(real_pacs), "--cache_dir", str(pacs_cache),
                   "--output_dir", str(out), "--max_steps", "2", "--batch_size", "8")
    results = json.loads((out / "results.json").read_text())
    assert RESULT_KEYS <= results.keys()
    assert results["num_target_eval"] == 2048 and results["num_source_eval"] == 1670
    assert results["steps"] == 2 and results["method"] == "dann"
    assert results["config"]["alpha"] == 0.1 and results["config"]["target"] == "art_painting"
    epoch = results["epochs"][-1]
    for key in ("train/class_loss", "train/domain_loss", "train/domain_acc", "train/alpha",
                "eval/source_acc", "eval/target_acc"):
        assert key in epoch, key
    assert 0 <= results["target_acc"] <= 1 and results["target_acc"] == epoch["eval/target_acc"]
    assert (out / "model.safetensors").stat().st_size > 200e6  # AlexNet + G_d weights
    assert "epoch 1/30" in result.stdout


@pytest.mark.slow
def test_baseline_and_upper_bound_on_tiny_data(tmp_path):
    root = write_tiny_pacs(tmp_path / "PACS")
    for train_on in ("source", "target"):
        out = tmp_path / train_on
        train("train_baseline.py", "--data_root", str(root), "--cache_dir", str(tmp_path / "cache"),
              "--output_dir", str(out), "--epochs", "2", "--batch_size", "4", "--train_on", train_on)
        results = json.loads((out / "results.json").read_text())
        assert results["method"] == "baseline" and len(results["epochs"]) == 2
        assert results["steps"] == 2 * 2  # 6 images, batch 4 -> 2 steps per epoch
        assert "train/domain_loss" not in results["epochs"][-1]
        assert results["num_target_eval"] == 6


@pytest.mark.slow
def test_two_processes_count_every_target_image_once(real_pacs, pacs_cache, tmp_path):
    torchrun = shutil.which("torchrun") or pytest.fail("torchrun not found (it comes with torch)")
    out = tmp_path / "ddp"
    train("train_dann.py", "--data_root", str(real_pacs), "--cache_dir", str(pacs_cache),
          "--output_dir", str(out), "--max_steps", "2", "--batch_size", "8",
          launcher=(torchrun, "--nproc_per_node", "2"))
    results = json.loads((out / "results.json").read_text())
    assert results["num_processes"] == 2
    assert results["num_target_eval"] == 2048 and results["num_source_eval"] == 1670

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
from dann.run import cpu_has_native_bf16
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


@pytest.mark.parametrize("flag, env, amx, expected", [
    ("bf16", "", True, "bf16"),  # asked for, on a CPU with AMX: bf16 autocast
    ("bf16", "", False, "no"),  # asked for, no AMX: fp32 (bf16 would be several times slower)
    ("", "bf16", True, "no"),  # the accelerate config's bf16 is the GPUs' default, not a CPU's
    ("fp16", "", True, "no"),  # fp16 autocast on a CPU: fp32
])
def test_a_cpu_trains_in_bf16_only_when_asked_and_the_cpu_has_amx(flag, env, amx, expected, monkeypatch, capsys,
                                                                   request):
    from accelerate.state import AcceleratorState

    from dann import run
    AcceleratorState._reset_state(reset_partial_state=True)  # one precision per process otherwise
    request.addfinalizer(lambda: AcceleratorState._reset_state(reset_partial_state=True))
    from dann.config import TrainConfig
    monkeypatch.setattr(run, "cpu_has_native_bf16", lambda: amx)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", env)
    accelerator = run.make_accelerator(TrainConfig(cpu=True, mixed_precision=flag))
    assert accelerator.mixed_precision == expected
    said = "".join(capsys.readouterr())
    assert ("training in fp32 on the CPU" in said) == (expected == "no")


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no AMX (bf16)")
def test_a_bf16_run_on_an_amx_cpu_trains_and_says_bf16(tiny_pacs, tmp_path):
    out = tmp_path / "bf16"
    result = train(str(ROOT / "tests" / "tiny_train.py"), "dann", "--backbone", "tiny", "--data_root", str(tiny_pacs),
                   "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(out), "--epochs", "2",
                   "--batch_size", "4", "--no-tsne", "--mixed_precision", "bf16")
    results = json.loads((out / "results.json").read_text())
    assert results["mixed_precision"] == "bf16" and results["steps"] == 4
    assert ", bf16, " in result.stdout + result.stderr  # the start line
    assert 0 <= results["target_acc"] <= 1

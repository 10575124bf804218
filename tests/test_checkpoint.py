"""Checkpoints, resume after SIGKILL / SIGTERM / SIGINT, the NaN stop, and safe loading.

Runs go through the real command line with a tiny backbone (tests/tiny_train.py) on a tiny
generated PACS: 8 images per domain, batch 2, so 4 steps per epoch.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dann.errors import UserError

from conftest import write_tiny_pacs
from tiny_train import HELD, register

from dann import checkpoint, plugins
from dann.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (see conftest)

TINY_TRAIN = Path(__file__).with_name("tiny_train.py")
STEPS_PER_EPOCH = 4


@pytest.fixture
def data(tmp_path) -> Path:
    return write_tiny_pacs(tmp_path / "PACS", per_class=4)


def flags(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--cpu", "--backbone", "tiny", "--pretrained", "none", "--data_root", str(data), "--batch_size", "2",
            "--epochs", "4", "--lr", "0.05", "--num_workers", "0", "--data_path", "tensor",
            "--augment", "--lr_schedule", "dann", "--alpha_schedule", "dann",
            "--cache_dir", str(data.parent / "cache"), "--output_dir", str(out), *extra]


def train(argv: list[str], env: dict | None = None, method: str = "dann") -> subprocess.CompletedProcess:
    """The script's command line in a subprocess; `method` picks the entry point and --method."""
    script = ["baseline"] if method == "baseline" else ["dann", "--method", method]
    if "alpha_schedule" not in {f.name for f in plugins.hparams_of(plugins.METHODS, method).fields()}:  # no R_alpha
        i = argv.index("--alpha_schedule")
        argv = argv[:i] + argv[i + 2:]
    return subprocess.run([sys.executable, str(TINY_TRAIN), script[0], *argv, *script[1:]], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)


def metrics(out: Path) -> dict:
    """What must come out the same after a resume: the per-epoch records (the cheap selection
    scores of each evaluation included), the accuracies, and the end-of-run selection scores
    (reverse validation retrains a model, on its own seeded stream)."""
    results = json.loads((out / "results.json").read_text())
    selected = {k: v for k, v in results.items() if k.startswith("select/")}
    assert {"select/snd", "select/reverse_val"} <= set(selected), selected
    return {**selected, **{k: results[k] for k in ("epochs", "target_acc", "source_acc", "best_target_acc", "steps")}}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """metrics(method) of the run never interrupted (same data as `data`: write_tiny_pacs is seeded)."""
    done = {}

    def reference(method: str = "dann", *extra: str) -> dict:
        if (method, extra) not in done:
            data = write_tiny_pacs(tmp_path_factory.mktemp("reference") / "PACS", per_class=4)
            run = train(flags(data, data.parent / "reference", *extra), method=method)
            assert run.returncode == 0, run.stderr[-2000:]
            done[method, extra] = metrics(data.parent / "reference")
        return done[method, extra]
    return reference


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    """Wait for a known state of a run started in the background (a bound for a hung test, not a timing)."""
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ---------------------------------------------------------------------------- checkpoint files

class FakeProgress:
    def __init__(self, step):
        self.step = step

    def state_dict(self):
        return {"step": self.step}


def test_keeps_the_last_k_and_ignores_unfinished_folders(tmp_path):
    from accelerate import Accelerator
    from dann.config import TrainConfig

    accelerator = Accelerator(cpu=True)
    accelerator.prepare(torch.nn.Linear(2, 2))
    config = TrainConfig(keep_checkpoints=2)
    folder = tmp_path / "checkpoints"
    for step in (4, 8, 12):
        checkpoint.save(accelerator, folder, FakeProgress(step), config)
    (folder / ".step_00000016.tmp").mkdir()  # a save killed midway
    (folder / "step_00000020").mkdir()  # no progress.json: not complete
    assert [p.name for p in checkpoint.complete_checkpoints(folder)] == ["step_00000008", "step_00000012"]
    assert checkpoint.find_resume("auto", str(tmp_path)) == folder / "step_00000012"
    assert checkpoint.find_resume(str(tmp_path), "") == folder / "step_00000012"
    assert checkpoint.find_resume(str(folder / "step_00000008"), "") == folder / "step_00000008"
    assert checkpoint.run_dir_of(str(folder / "step_00000008")) == str(tmp_path)
    assert checkpoint.find_resume("auto", str(tmp_path / "elsewhere")) is None


# ---------------------------------------------------------------------------- kill and resume

@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_metrics(data, uninterrupted):
    out = data.parent / "killed"
    argv = flags(data, out, "--checkpoint_every", "1")
    process = subprocess.Popen([sys.executable, str(TINY_TRAIN), "dann", *argv],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "TINY_HOLD_AT_STEP": "6"})  # after the checkpoint of step 4
    wait_for(lambda: (out / HELD).exists(), process, "the run to hold at step 6")
    process.kill()  # SIGKILL: no handler runs
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "results.json").exists()
    saved = checkpoint.complete_checkpoints(out / "checkpoints")
    assert [p.name for p in saved] == ["step_00000004"]

    resumed = train(argv + ["--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert metrics(out) == uninterrupted()


@pytest.mark.slow
@pytest.mark.parametrize("name, data_path, method, extra", [
    ("SIGTERM", "tensor", "dann", ()), ("SIGINT", "loader", "dann", ()), ("SIGTERM", "tensor", "cdan", ()),
    ("SIGTERM", "tensor", "dsn", ()), ("SIGTERM", "tensor", "baseline", ()),
    ("SIGTERM", "tensor", "pseudo_labels", ("--pl_threshold", "0.5")),
    # mean domain loss, clipping, a bottleneck with batch norm, MCC, and epochs of 3 iterations
    # (the source stream wraps mid-epoch): the recipe options resume exactly too
    ("SIGTERM", "tensor", "dann", ("--domain_loss_reduction", "mean", "--clip_grad", "1", "--bottleneck_dim", "4",
                                   "--mcc_weight", "1", "--iters_per_epoch", "3")),
    # the families with their own update, phases or views; the reference recipe's options
    ("SIGTERM", "tensor", "mdd", ()), ("SIGTERM", "tensor", "mcd", ("--clip_grad", "1")),
    ("SIGTERM", "tensor", "dan", ("--dan_joint",)), ("SIGTERM", "tensor", "coral", ()),
    ("SIGTERM", "loader", "fixmatch", ("--fixmatch_threshold", "0.5")),
    ("SIGTERM", "tensor", "shot", ("--shot_source_share", "0.25")),  # step 6: adapting, mid-epoch
    ("SIGTERM", "tensor", "dann", ("--lr_schedule", "inv", "--nesterov", "--alpha_schedule", "warm_start",
                                   "--alpha_warmup_steps", "10", "--domain_batches", "joint", "--classify_target"))])
def test_signal_mid_epoch_checkpoints_and_resumes_exactly(data, uninterrupted, name, data_path, method, extra):
    out = data.parent / name
    argv = flags(data, out, *extra) + ["--data_path", data_path]
    stopped = train(argv, {"TINY_SIGNAL_AT_STEP": "6", "TINY_SIGNAL": name}, method=method)
    assert stopped.returncode == 128 + getattr(signal, name), stopped.stderr[-2000:]
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith(f"stopped: {name} at step 6") and "--resume auto" in last, last
    assert [p.name for p in checkpoint.complete_checkpoints(out / "checkpoints")] == ["step_00000006"]
    assert "Traceback" not in stopped.stderr

    resumed = train(argv + ["--resume", "auto"], method=method)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert metrics(out) == uninterrupted(method, *extra)


@pytest.mark.slow
def test_a_signal_during_evaluation_stops_there_and_the_resumed_run_evaluates(data, uninterrupted):
    """SIGTERM at step 8, the epoch's last: the stop comes during the evaluation that follows;
    the checkpoint says the evaluation is pending and the resumed run does it first."""
    out = data.parent / "eval_stop"
    stopped = train(flags(data, out), {"TINY_SIGNAL_AT_STEP": "8"})
    assert stopped.returncode == 143 and "stopped: SIGTERM at step 8" in stopped.stderr, stopped.stderr[-2000:]
    progress = json.loads((out / "checkpoints" / "step_00000008" / "progress.json").read_text())
    assert progress["pending_eval"] and "eval/target_acc" not in progress["history"][-1]
    resumed = train(flags(data, out, "--resume", "auto"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert metrics(out) == uninterrupted()


def test_main_called_from_python_leaves_signal_handlers_alone(data, monkeypatch):
    """Only the scripts turn SIGTERM into a checkpointed stop: inside pytest it still ends the suite."""
    import dann.run

    seen, real = [], dann.run.run
    monkeypatch.setattr(dann.run, "run", lambda config, stop=None: seen.append(signal.getsignal(signal.SIGTERM))
                        or real(config, stop))
    before = signal.getsignal(signal.SIGTERM)
    assert main("dann", flags(data, data.parent / "plain", "--epochs", "1")) == 0
    assert seen == [before] and signal.getsignal(signal.SIGTERM) == before


@pytest.mark.slow
def test_two_processes_stop_together_on_one_sigterm_and_resume_exactly(data, tmp_path):
    """Only rank 0 is signalled, at step 3; the processes agree at the next check (the end
    of epoch 1, step 4, after its evaluation), save one checkpoint with both RNG states, and
    the resumed two-process run ends as an uninterrupted two-process run."""
    def torchrun(out, env=None):
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               str(TINY_TRAIN), "dann", *flags(data, out),
                               *(["--resume", "auto"] if env is None and out.exists() else [])],
                              capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)
    reference = torchrun(tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-2000:]
    out = tmp_path / "stopped"
    stopped = torchrun(out, {"TINY_SIGNAL_AT_STEP": "3", "TINY_SIGNAL": "SIGTERM", "TINY_SIGNAL_RANK": "0"})
    assert stopped.returncode != 0
    assert "stopped: SIGTERM at step 4" in stopped.stderr, stopped.stderr[-2000:]
    assert stopped.stderr.count("stopped:") == 1  # rank 1 stops quietly
    assert [p.name for p in checkpoint.complete_checkpoints(out / "checkpoints")] == ["step_00000004"]
    assert (out / "checkpoints" / "step_00000004" / "random_states_1.pkl").is_file()  # rank 1 saved too
    resumed = torchrun(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert metrics(out) == metrics(tmp_path / "reference")
    assert json.loads((out / "results.json").read_text())["num_processes"] == 2


# ---------------------------------------------------------------------------- NaN, refusals, safety

@pytest.fixture(autouse=True)
def tiny_plugins(monkeypatch):
    register(monkeypatch)


@pytest.mark.parametrize("method", ["dann", "mcd"])
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, monkeypatch, capsys, method):
    """The step never syncs: a NaN at step 7 is found at the next check (the end of epoch 2,
    step 8); the update of step 7 and all after it were skipped on the device. MCD owns its
    update (three optimizer steps an iteration): the same guard, counted in iterations."""
    monkeypatch.setenv("TINY_NAN_AT_STEP", "7")
    out = data.parent / "nan"
    argv = flags(data, out, "--checkpoint_every", "1", "--method", method)
    if method == "mcd":  # no gradient reversal
        i = argv.index("--alpha_schedule")
        argv = argv[:i] + argv[i + 2:]
    assert main("dann", argv) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    good = out / "checkpoints" / "step_00000004"
    assert error.startswith("error: the loss is not finite (nan or inf) at step 7;"), error
    assert f"the last good checkpoint is {good}" in error
    assert checkpoint.complete_checkpoints(out / "checkpoints") == [good]
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_skipped_update_leaves_the_weights_of_the_last_good_step(precision):
    """NonFiniteGuard: the update of a NaN loss and every later one are skipped on the device.
    fp16: Accelerate wraps the optimizer with a GradScaler, which sets and then deletes the
    fused kernel's `found_inf` itself; a real torch GradScaler (CPU) in that place checks
    that the skip still holds, and stays sticky, under it."""
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    from dann.config import TrainConfig
    from dann.optim import make_optimizer
    from dann.train import NonFiniteGuard

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    model, optimizer = accelerator.prepare(model, make_optimizer(model, TrainConfig(lr=0.1)))
    assert optimizer.optimizer.defaults["fused"]  # the path the loop takes
    if precision == "fp16":  # what accelerate.prepare builds under --mixed_precision fp16 on a GPU
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4)
        optimizer = AcceleratedOptimizer(optimizer.optimizer, scaler=scaler)
        accelerator.scaler = scaler
    guard = NonFiniteGuard(accelerator, optimizer, start_step=10)
    x = torch.randn(4, 3)
    snapshots = []
    for loss_scale in (1.0, 1.0, float("nan"), 1.0, 1.0):
        loss = model(x).sum() * loss_scale
        guard.check(loss)
        optimizer.zero_grad()
        accelerator.backward(loss)
        guard.before_step(model.parameters())
        optimizer.step()
        guard.count_iteration()
        snapshots.append(model.weight.detach().clone())
    assert not torch.equal(snapshots[0], snapshots[1])  # good steps do update
    assert all(torch.equal(snapshots[1], later) for later in snapshots[2:])  # the NaN one and all after: none
    assert torch.isfinite(snapshots[-1]).all()
    with pytest.raises(UserError, match="at step 13;"):
        guard.raise_if_bad()


def test_fresh_run_refuses_a_folder_with_checkpoints_and_resume_checks_flags(data, capsys):
    out = data.parent / "run"
    assert main("dann", flags(data, out, "--checkpoint_every", "2", "--epochs", "2")) == 0
    capsys.readouterr()
    assert main("dann", flags(data, out)) == 1
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main("dann", flags(data, out, "--resume", "auto", "--batch_size", "4")) == 1
    assert "--batch_size (2 there, 4 now)" in capsys.readouterr().err
    # Resuming a finished run: nothing left to train, results written again from the checkpoint.
    (out / "results.json").unlink()
    assert main("dann", flags(data, out, "--resume", "auto", "--epochs", "2")) == 0
    assert json.loads((out / "results.json").read_text())["steps"] == 2 * STEPS_PER_EPOCH


@pytest.mark.parametrize("method, flag, first, then", [("dann", "discriminator_width", 8, 16),
                                                      ("dann", "bottleneck_dim", 8, 4),
                                                      ("cdan", "cdan_random_dim", 8, 16),
                                                      ("dsn", "dsn_decoder_width", 32, 64)])
def test_resume_refuses_another_architecture_flag(data, capsys, method, flag, first, then):
    """The flags a checkpoint must match come from the plug-ins' declarations (hparam(...,
    architecture=True)): a plug-in's new flag that shapes a network is checked without a list to update."""
    from dann.config import make_config

    out = data.parent / "run"
    extra = ["--method", method, "--discriminator", "bn_mlp"] if flag == "discriminator_width" else ["--method", method]
    assert flag in make_config(method=method, discriminator="bn_mlp").must_match()
    first_run = flags(data, out, "--checkpoint_every", "1", "--epochs", "1", *extra, f"--{flag}", str(first))
    assert main("dann", first_run) == 0
    capsys.readouterr()
    assert main("dann", flags(data, out, "--resume", "auto", "--epochs", "2", *extra, f"--{flag}", str(then))) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"--{flag} ({first} there, {then} now)" in error[0], error


@pytest.mark.parametrize("manifest", [True, False])
def test_resume_refuses_a_pickle_that_runs_code(data, tmp_path, capsys, manifest):
    """Refused before it is unpickled: as a file changed since it was saved (its sha256), or, in a
    checkpoint without manifest.json, by the weights-only loader."""
    out = data.parent / "run"
    assert main("dann", flags(data, out, "--checkpoint_every", "1", "--epochs", "1")) == 0
    marker = tmp_path / "pwned"
    saved = checkpoint.complete_checkpoints(out / "checkpoints")[-1]
    torch.save({"state": Exploit(str(marker))}, saved / "optimizer.bin")
    if not manifest:
        (saved / checkpoint.MANIFEST).unlink()
    capsys.readouterr()
    assert main("dann", flags(data, out, "--resume", str(saved), "--epochs", "2")) == 1
    error = capsys.readouterr().err.strip().splitlines()
    expected = (f"error: --resume {saved}: checkpoint file {saved / 'optimizer.bin'} is damaged (its contents changed"
                if manifest else f"error: --resume {saved}: cannot load the checkpoint {saved} (UnpicklingError")
    assert len(error) == 1 and error[0].startswith(expected), error
    assert "\x1b" not in error[0]  # torch's message makes words bold with terminal escapes
    assert not marker.exists()


class Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.slow
def test_a_signal_during_the_end_of_run_scores_checkpoints_and_the_resumed_run_scores(data, uninterrupted):
    """SIGTERM during reverse validation (its first step is the 17th of the process, after 16 of
    training): the run does not end as a success without its select/* scores (a requeue wrapper
    would see success), it saves the trained state and exits 143; resumed, it scores, as an
    uninterrupted run does."""
    out = data.parent / "scores_stop"
    stopped = train(flags(data, out), {"TINY_SIGNAL_AT_STEP": "17"})
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: SIGTERM during the end-of-run scores: checkpoint saved to ") \
        and "--resume auto" in last, last
    assert not (out / "results.json").exists()
    resumed = train(flags(data, out, "--resume", "auto"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert metrics(out) == uninterrupted()


def damage_file(path: Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"\x00 not what was saved")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "other_keys":
        path.write_text(json.dumps({"epochs_done": 2, "global_step": 8}))
    elif how == "missing":
        path.unlink()


@pytest.mark.parametrize("manifest", ["manifest", "no_manifest"])  # no_manifest: a checkpoint of an older version
@pytest.mark.parametrize("name, how, why", [
    ("random_states_0.pkl", "garbage", "UnpicklingError"),
    ("random_states_0.pkl", "truncated", ""),
    ("progress.json", "garbage", "JSONDecodeError"),
    ("progress.json", "other_keys", "other keys than a checkpoint's: missing epoch"),
    ("config.json", "missing", ""),
    ("config.json", "garbage", "JSONDecodeError"),
    ("model.safetensors", "truncated", ""),
])
def test_a_damaged_checkpoint_file_is_refused_in_one_line(data, capsys, manifest, name, how, why):
    """Every file of the checkpoint is checked before any is loaded: a damaged RNG state (which
    Accelerate skips with an info log: the resume 'succeeds' and ends with other metrics), damaged
    metadata (a traceback, or other keys: training silently restarted from step 0 on the loaded
    weights) or weights are one line naming the file and the older checkpoint to resume from."""
    out = data.parent / "run"
    assert main("dann", flags(data, out, "--checkpoint_every", "1", "--epochs", "2")) == 0
    older, newest = checkpoint.complete_checkpoints(out / "checkpoints")
    if manifest == "no_manifest":
        (newest / checkpoint.MANIFEST).unlink()
    damage_file(newest / name, how)
    capsys.readouterr()
    resumed = main("dann", flags(data, out, "--resume", "auto", "--epochs", "3"))
    error = capsys.readouterr().err.strip().splitlines()
    if manifest == "no_manifest" and name == "model.safetensors":  # found by the loader, without the file's name
        assert resumed == 1 and len(error) == 1, error
        assert error[0].startswith(f"error: --resume auto: cannot load the checkpoint {newest} ("), error
        assert error[0].endswith(f"resume from an older checkpoint: --resume {older}"), error
        return
    assert resumed == 1 and len(error) == 1, error
    expected = "is missing" if how == "missing" else "is damaged ("
    assert error[0].startswith(f"error: --resume auto: checkpoint file {newest / name} {expected}"), error[0]
    assert why in error[0] if manifest == "no_manifest" else "contents changed" in error[0] or how == "missing"
    assert error[0].endswith(f"resume from an older checkpoint: --resume {older}"), error[0]
    assert main("dann", flags(data, out, "--resume", str(older), "--epochs", "3")) == 0  # the fix works

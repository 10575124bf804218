"""Faults (issue 28, docs/FAULTS.md): processes killed mid-work, full and unwritable disks, damaged
checkpoint files, failures that must not read as success. Each test reproduces one case and checks
what the product does: one line saying what and how to fix, a non-zero exit where something
failed, no process left behind, nothing already computed lost.

Runs that must be caught mid-work wait at a barrier (tests/tiny_train.py's TINY_HOLD_AT_STEP, or
a stand-in program's own), never for "long enough". Full disks are small tmpfs mounts (root only;
elsewhere skipped, saying why).
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

from conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (see conftest)


def wait_for(condition, what: str, process: subprocess.Popen | None = None, timeout: float = 120) -> None:
    """Wait for a known state (the bound is for a hung test, not a timing)."""
    deadline = time.time() + timeout
    while not condition():
        assert process is None or process.poll() is None, f"the process ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ---------------------------------------------------------------------------- the runners' launcher

STOPS_SLOWLY = """import signal, sys, time
from pathlib import Path
folder, got = Path(sys.argv[1]), []
signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
(folder / "started").touch()
while not got:
    time.sleep(0.05)
(folder / "stopping").touch()
while not (folder / "release").exists():  # a checkpoint being written
    time.sleep(0.05)
print(f"stopped: SIGTERM ({len(got)} received)", file=sys.stderr, flush=True)
sys.exit(143)
"""


@pytest.mark.slow
def test_the_launcher_leaves_sigterm_to_the_training(tmp_path):
    """A sweep's `accelerate launch` gets the stop signal with its training (the runner signals the
    process group, Slurm every process of a job, sometimes twice): the training, still writing its
    checkpoint, is neither signalled again nor killed, and its last line reaches the log."""
    (tmp_path / "train.py").write_text(STOPS_SLOWLY)
    launcher = subprocess.Popen([sys.executable, "-m", "dann.experiments.launch", "--quiet", "--config_file",
                                 str(ROOT / "accelerate_config.yaml"), "train.py", str(tmp_path)],
                                cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                                stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (tmp_path / "started").exists(), "the training to start", launcher)
    os.killpg(launcher.pid, signal.SIGTERM)  # the runner stops the run
    wait_for(lambda: (tmp_path / "stopping").exists(), "the training to get its SIGTERM", launcher)
    os.kill(launcher.pid, signal.SIGTERM)  # Slurm's own signal to every process of the job
    (tmp_path / "release").touch()
    _, stderr = launcher.communicate(timeout=60)
    assert "stopped: SIGTERM (1 received)" in stderr, stderr


def test_a_run_that_ends_between_the_waits_two_looks_keeps_its_exit_code():
    """A Slurm job waits for its training's process group, looking at the child (poll) and then at
    the group; a training that ends between the two looks must still read as finished: its exit
    code set (0), not None, which records a finished run as failed (seen once in CI's Slurm test)."""
    from dann.experiments.local import group_alive, wait_group

    process = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    wait_for(lambda: not group_alive(process.pid), "the child to end (a zombie, not reaped yet)")
    process.poll = lambda: None  # the look that came just before it ended
    assert wait_group(process, time.time() + 60)
    assert process.returncode == 0


# ---------------------------------------------------------------------------- 1. kill -9 while decoding

def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has ended: where PID 1 does not reap, orphans stay zombies)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals and /proc are Linux's")
def test_kill_9_while_decoding_leaves_no_worker_no_lock_and_no_partial_file(tmp_path):
    """What the OOM killer or a preempted node does: the decode workers go with the run, the next
    run in the folder is not refused, and the half-written cache file is cleaned up."""
    from train_helpers import TINY_TRAIN, clean_env
    from conftest import write_tiny_pacs

    data = write_tiny_pacs(tmp_path / "PACS", per_class=4)  # 8 images a domain: 8 chunks for 2 workers
    cache, out = tmp_path / "cache", tmp_path / "run"
    command = [sys.executable, str(TINY_TRAIN), "dann", "--cpu", "--backbone", "tiny", "--pretrained", "none",
               "--data_root", str(data), "--cache_dir", str(cache), "--output_dir", str(out), "--batch_size", "2",
               "--epochs", "1", "--num_workers", "2", "--data_path", "tensor", "--no-tsne"]
    run = subprocess.Popen(command, env=clean_env(tmp_path, TINY_HOLD_DECODE="1"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    workers = []
    try:
        wait_for(lambda: len(list(cache.glob(".held.*"))) == 2, "both decode workers to start", run)
        workers = [int(p.name.split(".")[-1]) for p in cache.glob(".held.*")]
        assert list(cache.glob("*.partial")), "the decode writes a temporary file"
        run.kill()  # SIGKILL: no handler, no cleanup
        run.wait()
        wait_for(lambda: not any(alive(pid) for pid in workers), "the decode workers to end with the run")
    finally:
        for pid in workers:  # a failed test must not leave them behind either
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    again = subprocess.run(command, env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not list(cache.glob("*.partial")), "the killed run's temporary file is left in the cache"
    assert (out / "results.json").is_file()


LOCKED = """import os, sys, time
from dann import checkpoint
lock = checkpoint.lock_run_dir(sys.argv[1])
if os.fork() == 0:  # a child that outlives the run (a worker whose parent was killed)
    time.sleep(600)
    os._exit(0)
print("locked", flush=True)
time.sleep(600)
"""


def test_a_run_folder_lock_is_not_held_by_a_dead_owners_children(tmp_path):
    """The lock belongs to the process that took it: a child it forked (a decode or DataLoader
    worker) never holds it, so the owner's death frees the folder; while the owner lives, a second
    run is refused in one line naming it."""
    from dann import checkpoint
    from dann.errors import UserError

    out = tmp_path / "run"
    owner = subprocess.Popen([sys.executable, "-c", LOCKED, str(out)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert owner.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"^--output_dir {out} is in use by another live run \\(pid {owner.pid}\\)"):
            checkpoint.lock_run_dir(out)
        owner.kill()
        owner.wait()
        handle = checkpoint.lock_run_dir(out)  # its child still lives
        checkpoint.release_run_dir(handle, out, created=False)
    finally:
        os.killpg(owner.pid, signal.SIGKILL)  # the child too (its own session)


# ---------------------------------------------------------------------------- 2. a full disk

@pytest.fixture
def small_disk(tmp_path):
    """A folder on a 1 MB file system (tmpfs), as a full home quota is; skipped where it cannot be mounted."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def tiny_command(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    from train_helpers import TINY_TRAIN

    return [sys.executable, str(TINY_TRAIN), "dann", "--cpu", "--backbone", "tiny", "--pretrained", "none",
            "--data_root", str(data), "--cache_dir", str(cache), "--output_dir", str(out), "--batch_size", "2",
            "--epochs", "1", "--data_path", "tensor", "--no-tsne", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_decode_cache_on_a_full_disk_falls_back_to_memory_in_one_line(tmp_path, small_disk, workers):
    """The cache file is reserved whole when it is created, so a full disk fails there (ENOSPC, one
    warning, the domain decoded in memory), not in a write to the memory map later (SIGBUS: a dead
    worker's BrokenProcessPool traceback, or with --num_workers 0 'Bus error', exit 135)."""
    from train_helpers import clean_env
    from conftest import write_tiny_pacs

    data = write_tiny_pacs(tmp_path / "PACS", per_class=4, size=80)  # 8 images of 196 kB a domain
    run = subprocess.run(tiny_command(data, tmp_path / "run", small_disk, "--num_workers", workers),
                         env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    warnings = [line for line in run.stderr.splitlines() if "decode cache" in line]
    assert len(warnings) == 2 and all(w.startswith("warning: cannot write the decode cache in ") and
                                      "the disk is full" in w for w in warnings), run.stderr[-3000:]
    assert "Traceback" not in run.stderr and not list(small_disk.glob("*.partial"))


@pytest.mark.slow
def test_a_decode_worker_killed_by_the_system_is_one_line(tmp_path):
    """The OOM killer takes one decode worker: one line naming the domain and the fix, exit 1, and
    the other worker goes too (it took SIGTERM by default, not the run's inherited handler)."""
    from train_helpers import clean_env
    from conftest import write_tiny_pacs

    data = write_tiny_pacs(tmp_path / "PACS", per_class=4)
    cache = tmp_path / "cache"
    run = subprocess.Popen(tiny_command(data, tmp_path / "run", cache, "--num_workers", "2"),
                           env=clean_env(tmp_path, TINY_HOLD_DECODE="1"), stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(list(cache.glob(".held.*"))) == 2, "both decode workers to start", run)
    workers = [int(p.name.split(".")[-1]) for p in cache.glob(".held.*")]
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 1, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("error: decoding photo: a decode worker was killed by the "
                                                      "system (out of memory?); pass fewer --num_workers"), stderr
    wait_for(lambda: not alive(workers[1]), "the other worker to end")


@pytest.mark.slow
def test_the_shipped_digits_cache_on_a_full_disk_is_built_in_memory(tmp_path, small_disk):
    from train_helpers import TINY_TRAIN, clean_env

    run = subprocess.run([sys.executable, str(TINY_TRAIN), "dann", "--cpu", "--dataset", "digits_shipped",
                          "--backbone", "lenet_bn", "--pretrained", "none", "--max_steps", "1",
                          "--cache_dir", str(small_disk), "--output_dir", str(tmp_path / "run")],
                         env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"warning: cannot write the digits_shipped cache in {small_disk} (the disk is full); built in memory" \
           in run.stderr, run.stderr[-3000:]
    assert not list(small_disk.iterdir())


# ---------------------------------------------------------------------------- 3. the output disk fills up

def fill(disk: Path, leave: int) -> None:
    """Fill `disk` but `leave` bytes."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # full
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)


@pytest.mark.slow
def test_a_full_output_disk_keeps_the_results_and_names_what_was_not_saved(tmp_path, small_disk):
    """The disk fills during training: results.json is written first (a few kB), the figure and the
    weights that do not fit are named in one line, exit 1, and no partial file is left."""
    from train_helpers import clean_env
    from conftest import write_tiny_pacs
    from tiny_train import HELD, RELEASE

    data = write_tiny_pacs(tmp_path / "PACS", per_class=4)
    out = small_disk / "run"
    run = subprocess.Popen(tiny_command(data, out, tmp_path / "cache", "--num_workers", "0", "--save_model"),
                           env=clean_env(tmp_path, TINY_HOLD_AT_STEP="4"), stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (out / HELD).exists(), "the run to hold at its last step", run)
    fill(small_disk, leave=16 * 1024)
    (out / RELEASE).touch()
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: not saved: confusion_matrix.png (the disk is full), model.safetensors (the disk "
                           f"is full); {out}/results.json holds the results; free disk space"), last
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 4 and "figures" not in results
    assert sorted(p.name for p in out.iterdir()) == [".lock", HELD, RELEASE, "results.json"] or \
        sorted(p.name for p in out.iterdir()) == [HELD, RELEASE, "results.json"]


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_is_one_line_and_leaves_no_temporary_folder(tmp_path, small_disk):
    """SIGTERM on a full disk: the checkpoint cannot be written (safetensors raises its own error,
    not an OSError): one line, exit 1, no .step_N.tmp left."""
    from train_helpers import clean_env
    from conftest import write_tiny_pacs
    from tiny_train import HELD

    data = write_tiny_pacs(tmp_path / "PACS", per_class=4)
    out = small_disk / "run"
    run = subprocess.Popen(tiny_command(data, out, tmp_path / "cache", "--num_workers", "0", "--epochs", "2"),
                           env=clean_env(tmp_path, TINY_HOLD_AT_STEP="2"), stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (out / HELD).exists(), "the run to hold", run)
    fill(small_disk, leave=0)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: writing checkpoint {out}/checkpoints/step_00000002 failed (the disk is full); "
                           "free disk space or choose another --output_dir"), last
    assert "Traceback" not in stderr and not list((out / "checkpoints").iterdir())


# ---------------------------------------------------------------------------- 5, 6, 8, 10: refused in one line

@pytest.fixture
def tiny_main(tmp_path, monkeypatch, capsys):
    """main() of train_dann.py with tests/tiny_train.py's plug-ins, on a tiny PACS (8 images a
    domain): returns (exit code, the stderr lines) of a run with the given flags."""
    from conftest import write_tiny_pacs
    from tiny_train import register
    from dann.cli import main

    register(monkeypatch)
    data = write_tiny_pacs(tmp_path / "PACS", per_class=4)

    def run(*flags: str) -> tuple[int, list[str]]:
        capsys.readouterr()
        code = main("dann", ["--cpu", "--backbone", "tiny", "--pretrained", "none", "--data_root", str(data),
                             "--cache_dir", str(tmp_path / "cache"), "--batch_size", "2", "--epochs", "1",
                             "--num_workers", "0", "--data_path", "tensor", "--no-tsne", *flags])
        return code, capsys.readouterr().err.strip().splitlines()
    return run


@pytest.fixture
def read_only(tmp_path):
    """A folder on a read-only file system; skipped where it cannot be mounted."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root): {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.parametrize("where, reason", [("on_a_file", "it is a file, not a folder"),
                                           ("under_a_file", "a part of the path is a file"),
                                           ("read_only", "the file system is read-only")])
def test_an_unwritable_output_dir_is_one_line_before_any_decoding(tmp_path, tiny_main, request, where, reason):
    (tmp_path / "a_file").write_text("")
    out = {"on_a_file": tmp_path / "a_file", "under_a_file": tmp_path / "a_file" / "run",
           "read_only": request.getfixturevalue("read_only") / "run" if where == "read_only" else None}[where]
    code, err = tiny_main("--output_dir", str(out))
    assert code == 1 and len(err) == 1, err
    assert err[0] == f"error: --output_dir {out}: cannot write there ({reason}); choose a writable folder"
    assert not list((tmp_path / "cache").glob("*.npy"))  # nothing was decoded


def test_a_cache_dir_that_cannot_be_made_is_one_line(tmp_path, tiny_main):
    (tmp_path / "a_file").write_text("")
    code, err = tiny_main("--cache_dir", str(tmp_path / "a_file" / "cache"), "--output_dir", str(tmp_path / "run"))
    assert code == 1 and err == [f"error: --cache_dir {tmp_path / 'a_file' / 'cache'}: cannot write there (a part "
                                 f"of the path is a file); choose a writable folder"], err


def test_a_batch_larger_than_a_domain_is_refused_before_training(tmp_path, tiny_main):
    """--batch_size 100000 on 5,000 digits tried to allocate ~20 GB; here 8 images a domain, 7 of the
    source after --source_val takes one out."""
    code, err = tiny_main("--batch_size", "100000", "--output_dir", str(tmp_path / "run"))
    assert code == 1 and [line for line in err if line.startswith("error:")] == err[-1:], err
    assert err[-1] == ("error: --batch_size 100000 is larger than the 7 training images of photo (after --source_val "
                      "0.1 held some out); choose --batch_size 7 or less"), err


def test_a_new_run_never_overwrites_finished_results(tmp_path, tiny_main):
    out = tmp_path / "run"
    assert tiny_main("--output_dir", str(out))[0] == 0
    finished = (out / "results.json").read_text()
    code, err = tiny_main("--output_dir", str(out), "--lr", "0.01")
    assert code == 1 and err == [f"error: --output_dir {out} already holds the results of an earlier run "
                                 f"(results.json); choose another --output_dir, or run it again there with --resume "
                                 f"auto"], err
    assert (out / "results.json").read_text() == finished
    assert tiny_main("--output_dir", str(out), "--resume", "auto")[0] == 0  # asked for: run again there


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "--seed must be between 0 and 4294967295, got -1"),
    (["--seed", "99999999999999999999"], "--seed must be between 0 and 4294967295, got 99999999999999999999"),
    (["--seeds", "0,-3"], "--seeds must be between 0 and 4294967295, got -3"),
    (["--momentum", "1.5"], "--momentum must be in [0, 1), got 1.5"),
    (["--target", ""], "--target is empty; give a domain"),
    (["--target="], "--target is empty; give a domain"),
    (["--source", ""], "--source is empty; give a domain"),
])
def test_flag_values_a_run_cannot_take_are_one_line(argv, message, capsys):
    from dann.config import parse_config

    with pytest.raises(SystemExit) as e:
        parse_config("dann", argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err


# ---------------------------------------------------------------------------- 9. failures never read as success

def sweep_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    from train_helpers import clean_env

    return subprocess.run([sys.executable, str(ROOT / "sweep.py"), *args], cwd=cwd, capture_output=True, text=True,
                          env=clean_env(cwd, **env), timeout=300)


@pytest.mark.slow
def test_a_sweep_whose_runs_fail_exits_1_with_a_line_naming_them(tmp_path):
    """Every run fails (a parameter the program does not take): the table is written, and the
    command says so in one line, exit 1 (it exited 0)."""
    import yaml

    (tmp_path / "train_baseline.py").write_text("import sys\nsys.exit('error: unknown flag --alhpa; see --help')\n")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "program": "train_baseline.py", "method": "grid", "metric": {"name": "target_acc", "goal": "maximize"},
        "parameters": {"alhpa": {"values": [0.1, 0.2]}}}))
    done = sweep_cli("run", "sweep.yaml", "--out", "out", "--command_style", "python", "--wandb", "off", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: 2 of 2 runs failed: ") and \
        error[0].count("(error: unknown flag --alhpa; see --help)") == 2, error
    assert (tmp_path / "out" / "table.md").read_text().count("| failed |") == 2


def test_a_table_without_rows_is_refused(tmp_path):
    (tmp_path / "recipes.yaml").write_text("dataset: digits_shipped\npairs: [mnist:mnist_m]\nrows: {}\n")
    done = sweep_cli("table", "--recipes", "recipes.yaml", "--out", "out", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.startswith("error: --recipes recipes.yaml: needs `rows: "), done.stderr


def test_a_table_row_that_is_not_in_the_recipes_is_refused_naming_the_rows(tmp_path):
    (tmp_path / "recipes.yaml").write_text("dataset: digits_shipped\npairs: [mnist:mnist_m]\n"
                                           "rows: {DANN (chosen): {method: dann}, MCC: {method: mcc}}\n")
    done = sweep_cli("table", "--recipes", "recipes.yaml", "--out", "out", "--row", "DANN (chosen)", "--row", "DAN",
                     cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "error: --row 'DAN': no such row in recipes.yaml; its rows: DANN (chosen); MCC"], done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_table_whose_run_fails_exits_1_with_a_line_naming_it(tmp_path):
    done = sweep_cli("table", "--dataset", "pacs", "--pairs", "photo:art_painting", "--methods", "baseline",
                     "--backbones", "lenet", "--seeds", "0", "--out", "out", "--wandb", "off", "--",
                     f"--data_root={tmp_path / 'missing'}", "--cpu", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: 1 of 1 runs failed: ") and \
        f"(error: --data_root {tmp_path / 'missing'}: no such folder" in done.stderr, done.stderr
    assert "| failed |" in (tmp_path / "out" / "table.md").read_text()


STOPPING_RUN = """import json, signal, sys, time
from pathlib import Path
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
out = Path(args["output_dir"])
out.mkdir(parents=True, exist_ok=True)
stopping = []
signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
(out / "started").write_text(str(__import__("os").getpid()))
while not stopping:
    time.sleep(0.05)
(out / "stopping").touch()
while not (out / "release").exists():  # a checkpoint that takes long
    time.sleep(0.05)
"""


def stopping_sweep(folder: Path) -> list[str]:
    import yaml

    (folder / "train_baseline.py").write_text(STOPPING_RUN)
    (folder / "sweep.yaml").write_text(yaml.safe_dump({
        "program": "train_baseline.py", "method": "grid", "metric": {"name": "target_acc", "goal": "maximize"},
        "parameters": {"lr": {"values": [0.1]}}}))
    return [sys.executable, str(ROOT / "sweep.py"), "run", "sweep.yaml", "--out", "out", "--command_style", "python",
            "--wandb", "off"]


@pytest.mark.slow
@pytest.mark.parametrize("signals, code", [(["SIGTERM"], 143), (["SIGINT"], 130), (["SIGINT", "SIGINT"], 130)])
def test_the_runner_exits_128_plus_the_signal_and_a_second_one_stops_its_runs_at_once(tmp_path, signals, code):
    """SIGTERM: 143 (it was 130); Ctrl-C: 130. The runner waits for its runs to checkpoint; a second
    signal stops them at once (SIGKILL) instead of leaving them behind."""
    from train_helpers import clean_env

    runner = subprocess.Popen(stopping_sweep(tmp_path), cwd=tmp_path, env=clean_env(tmp_path), text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs = tmp_path / "out" / "runs"
    wait_for(lambda: list(runs.glob("*/started")), "the run to start", runner)
    run_dir = next(runs.glob("*/started")).parent
    child = int((run_dir / "started").read_text())
    runner.send_signal(getattr(signal, signals[0]))
    wait_for(lambda: (run_dir / "stopping").exists(), "the run to get its SIGTERM", runner)
    if len(signals) == 1:
        (run_dir / "release").touch()  # its checkpoint is written
    else:
        runner.send_signal(getattr(signal, signals[1]))
    _, stderr = runner.communicate(timeout=120)
    assert runner.returncode == code, stderr
    assert stderr.strip().splitlines()[-1].startswith(f"stopped: {signals[0]}: the runs were stopped"), stderr
    assert not alive(child), "the run outlived the runner"


@pytest.mark.slow
def test_a_second_ctrl_c_stops_a_run_at_once_with_130(tmp_path):
    """The first Ctrl-C asks for a checkpointed stop (said in a note); a second one, here while the
    images are decoded, stops at once: 130 and one line (it died of SIGINT, -2), the workers with it."""
    from train_helpers import clean_env
    from conftest import write_tiny_pacs
    import threading

    data = write_tiny_pacs(tmp_path / "PACS", per_class=4)
    cache = tmp_path / "cache"
    run = subprocess.Popen(tiny_command(data, tmp_path / "run", cache, "--num_workers", "2"),
                           env=clean_env(tmp_path, TINY_HOLD_DECODE="1"), stderr=subprocess.PIPE, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(run.stderr), daemon=True)
    reader.start()
    wait_for(lambda: len(list(cache.glob(".held.*"))) == 2, "both decode workers to start", run)
    workers = [int(p.name.split(".")[-1]) for p in cache.glob(".held.*")]
    try:
        run.send_signal(signal.SIGINT)
        wait_for(lambda: any(line.startswith("note: SIGINT: stopping with a checkpoint") for line in lines),
                 "the first Ctrl-C to be taken", run)
        run.send_signal(signal.SIGINT)
        run.wait(timeout=120)
        reader.join(timeout=30)
        assert run.returncode == 130, "".join(lines)[-3000:]
        assert lines[-1].startswith("stopped: SIGINT again: stopped at once, without a checkpoint"), lines[-5:]
        wait_for(lambda: not any(alive(pid) for pid in workers), "the decode workers to end")
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if run.poll() is None:
            run.kill()


# ---------------------------------------------------------------------------- 12. the smaller ones

def one_class_pacs(root: Path, classes: tuple[str, ...]) -> Path:
    from conftest import write_tiny_pacs

    return write_tiny_pacs(root, classes=classes, per_class=4)


def test_a_dataset_of_one_class_is_refused(tmp_path, tiny_main):
    data = one_class_pacs(tmp_path / "ONE", ("dog",))
    code, err = tiny_main("--data_root", str(data), "--output_dir", str(tmp_path / "run"))
    assert code == 1 and err == ["error: --dataset pacs: photo, art_painting hold one class (dog): there is nothing "
                                 "to classify; give domains with two classes or more"], err


def test_the_unreadable_files_left_out_are_named_once(tmp_path, tiny_main):
    """--skip_bad_images: the list is validated, then decoded; it was named by both."""
    bad = tmp_path / "PACS" / "art_painting" / "dog" / "9.jpg"
    bad.write_text("not a JPEG")
    code, err = tiny_main("--data_path", "auto", "--skip_bad_images", "--output_dir", str(tmp_path / "run"))
    assert code == 0, err
    said = [line for line in err if "--skip_bad_images: leaving out" in line]
    assert len(said) == 1 and str(bad) in said[0], err


def test_folders_in_class_folders_are_noted(tmp_path, tiny_main):
    """A folder inside a class folder (even one named like an image) is not read, and a note says so."""
    (tmp_path / "PACS" / "photo" / "dog" / "more").mkdir()
    (tmp_path / "PACS" / "photo" / "dog" / "x.jpg").mkdir()
    code, err = tiny_main("--output_dir", str(tmp_path / "run"))
    assert code == 0, err
    assert any(line.startswith(f"note: skipped 2 folder(s) inside the class folders of {tmp_path / 'PACS' / 'photo'}")
               for line in err), err


def test_a_huge_image_is_one_warning_naming_it(tmp_path, monkeypatch, capsys):
    """PIL's DecompressionBombWarning (an image of more than 89 million pixels; here the limit is
    lowered) was two raw lines without the file's name."""
    from PIL import Image
    from dann.datasets import folder

    path = tmp_path / "huge.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 pixels: over it, under twice it
    folder.decode_image(path)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: {path}: Image size (1600 pixels) exceeds limit of 1000 pixels, could be decompression "
                   f"bomb DOS attack."], err


def test_class_names_the_figures_font_lacks_are_one_warning(tmp_path, tiny_main):
    """matplotlib warns twice per missing glyph per figure, in raw lines; one line says it all."""
    data = one_class_pacs(tmp_path / "CJK", ("日本", "dog"))
    code, err = tiny_main("--data_root", str(data), "--output_dir", str(tmp_path / "run"))
    assert code == 0, err
    font = [line for line in err if "font" in line or "Glyph" in line]
    assert font == ["warning: the figures' font lacks characters of the class names (日本): they show as boxes"], err


def test_python_warnings_of_the_scripts_are_one_line_each():
    probe = ("import warnings\nfrom dann.errors import route_warnings\nroute_warnings()\n"
             "warnings.warn('a library\\nspeaking \\x1b[1mloudly\\x1b[0m', DeprecationWarning)")
    done = subprocess.run([sys.executable, "-W", "always", "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.stderr.splitlines() == ["warning: DeprecationWarning: a library speaking loudly"], done.stderr

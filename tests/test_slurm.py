"""Grids on Slurm (`--launcher slurm`), against a real one-node Slurm started for this module
(tests/slurm_cluster.py): a grid to its table, a job requeued mid-run resuming exactly, a
restart while a job is pending submitting nothing twice, the time limit's signal, a user error
not requeued; the multi-node sbatch script; the flags' one-line errors.

A run is caught mid-training at a known point, never by timing: tests/tiny_train.py's barrier
(TINY_HOLD_AT_STEP) holds it at step 6, in its second epoch, until the test releases it or a stop
signal reaches it. Slurm holds a requeued job for two minutes (its BeginTime); the tests release
it two seconds later with `scontrol update StartTime=now`, as the wait would only pass time.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import slurm_cluster
import sweep
from conftest import ROOT, write_tiny_pacs
from tiny_train import HELD, RELEASE
from train_helpers import TINY_TRAIN, clean_env

from dann.errors import UserError

# One Slurm per module: under pytest-xdist (-n 2 --dist loadgroup) its tests share one worker.
pytestmark = pytest.mark.xdist_group("slurm")

# tests/tiny_train.py's baseline under the name a sweep YAML takes: the real command line, a tiny backbone.
WRAPPER = f"""import runpy, sys
sys.argv[1:1] = ["baseline"]
runpy.run_path({str(TINY_TRAIN)!r}, run_name="__main__")
"""
# 4 epochs of 4 steps (8 images per domain, batch 2), with augmentation and a schedule: RNG and
# progress must both come back on resume.
FLAGS = ["--cpu", "--backbone=tiny", "--pretrained=none", "--batch_size=2", "--epochs=4", "--augment",
         "--lr_schedule=dann", "--data_path=tensor", "--num_workers=0", "--no-tsne"]
HOLD_AT_STEP = "6"  # every run of the grid holds there (second epoch) until released or signalled


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    try:
        cluster = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    except slurm_cluster.Unavailable as e:
        pytest.skip(f"no test Slurm: {e}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The metrics of the lr=0.05 run trained straight through, without Slurm."""
    folder = tmp_path_factory.mktemp("reference")
    data = write_tiny_pacs(folder / "PACS", per_class=4)  # seeded: the same images as every test's
    (folder / "train_baseline.py").write_text(WRAPPER)
    run = subprocess.run([sys.executable, "train_baseline.py", *FLAGS, "--lr=0.05", f"--data_root={data}",
                          f"--cache_dir={folder / 'cache'}", "--report_to=none", "--output_dir=run"],
                         cwd=folder, env=clean_env(folder, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return metrics(folder / "run")


def metrics(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    return {k: results[k] for k in ("epochs", "target_acc", "source_acc", "best_target_acc", "steps")}


def tiny_sweep(folder: Path, parameters: dict) -> None:
    (folder / "train_baseline.py").write_text(WRAPPER)
    config = {"program": "train_baseline.py", "method": "grid", "metric": {"name": "target_acc", "goal": "maximize"},
              "parameters": parameters,
              "command": ["accelerate", "launch", "--quiet", "--config_file", str(ROOT / "accelerate_config.yaml"),
                          "${program}", "${args}"]}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(config))


class Driver:
    """`sweep.py run sweep.yaml --launcher slurm` in `folder`, its output lines collected as they come."""

    def __init__(self, folder: Path, slurm, extra: list[str]):
        command = [sys.executable, str(ROOT / "sweep.py"), "run", "sweep.yaml", "--out", "out", "--wandb", "off",
                   "--launcher", "slurm", "--slurm_cpus_per_job", "1", "--slurm_gpus_per_job", "0",
                   "--slurm_poll", "0.5", "--slurm_sbatch", "comment=dann-test", "--", *FLAGS,
                   f"--cache_dir={folder / 'cache'}", *extra]
        env = clean_env(folder, **slurm.env, OMP_NUM_THREADS="1", TINY_HOLD_AT_STEP=HOLD_AT_STEP)
        self.process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    def end(self, timeout: float = 120) -> str:
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return "".join(self.lines)


def wait_for(condition, what: str, timeout: float = 300) -> None:
    """Wait for a known state (a bound for a hung test, not a timing)."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def slurm_run(slurm, *command: str) -> str:
    done = subprocess.run(command, env={**os.environ, **slurm.env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def state(slurm, job_id: str) -> str:
    return slurm_run(slurm, "squeue", "--noheader", "--array", "--states=all", "--format=%T",
                     f"--jobs={job_id}").strip()


def release(slurm, job_id: str) -> None:
    """Let a requeued job start now rather than after Slurm's two-minute hold."""
    wait_for(lambda: state(slurm, job_id) == "PENDING", f"job {job_id} to be requeued")
    # Not within the second of the kill: slurmd refuses a launch whose credential is no newer
    # than the revocation of the killed one (whole seconds), and the job would fail.
    time.sleep(2)
    slurm_run(slurm, "scontrol", "update", f"JobId={job_id}", "StartTime=now")


def runs(folder: Path) -> dict:
    """{the run's parameters as a sorted tuple: its folder} of the grid's runs submitted so far."""
    found = {}
    for params in (folder / "out" / "runs").glob("*/params.json"):
        found[tuple(sorted(json.loads(params.read_text())["params"].items()))] = params.parent
    return found


def job_id(run_dir: Path) -> str:
    return json.loads((run_dir / "slurm.json").read_text())["job_id"]


def held(run_dir: Path) -> bool:
    """Whether the run waits at tiny_train's barrier (step 6, its second epoch)."""
    return (run_dir / HELD).is_file()


def let_go(run_dir: Path) -> None:
    """Release a run held at the barrier."""
    (run_dir / RELEASE).touch()


# ---------------------------------------------------------------------------- against a real Slurm

@pytest.mark.slow
def test_grid_on_slurm_requeued_mid_run_restarted_while_pending_resumes_exactly(slurm, tmp_path, uninterrupted):
    data = write_tiny_pacs(tmp_path / "PACS", per_class=4)
    tiny_sweep(tmp_path, {"lr": {"values": [0.05, 0.01]}})
    first = Driver(tmp_path, slurm, [f"--data_root={data}"])
    wait_for(lambda: len(runs(tmp_path)) == 2 and held(runs(tmp_path)[(("lr", 0.05),)]),
             "the first run to hold in its second epoch")
    run, other = runs(tmp_path)[(("lr", 0.05),)], runs(tmp_path)[(("lr", 0.01),)]
    let_go(other)
    ids = {run: job_id(run), other: job_id(other)}
    assert ids[run].split("_")[0] == ids[other].split("_")[0], "one job array for the grid"

    slurm_run(slurm, "scontrol", "requeue", ids[run])  # what an admin or a preemption does
    wait_for(lambda: state(slurm, ids[run]) == "PENDING", "the requeued job to be pending")
    first.process.send_signal(signal.SIGTERM)  # the driver stops waiting; the jobs go on
    output = first.end()
    assert first.process.returncode == 143 and output.strip().splitlines()[-1].startswith(
        "stopped: the Slurm jobs go on"), output

    second = Driver(tmp_path, slurm, [f"--data_root={data}"])  # restarted while a job is pending
    wait_for(lambda: any(line.startswith(f"wait {run.name}: its Slurm job {ids[run]} is pending")
                         for line in second.lines), "the restarted driver to find the pending job")
    release(slurm, ids[run])
    output = second.end()
    assert second.process.returncode == 0, output
    assert "submit " not in output and "2 of 2 runs finished" in output, output
    submissions = list((tmp_path / "out" / "slurm").glob("*_submission.sh"))
    assert {r: job_id(r) for r in ids} == ids and len(submissions) == 1
    assert "#SBATCH --comment=dann-test" in submissions[0].read_text()  # --slurm_sbatch reaches sbatch

    log = (run / "log.txt").read_text(errors="replace")
    assert log.count("--- Slurm job") == 2 and "stopped: SIGTERM at step 6" in log and "resumed from" in log, log
    assert metrics(run) == uninterrupted
    table = (tmp_path / "out" / "table.md").read_text()
    assert table.count("| finished |") == 2

    again = subprocess.run(second.process.args, cwd=tmp_path, env=clean_env(tmp_path, **slurm.env),
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.count("skip ") == 2 and "submit " not in again.stdout


@pytest.mark.slow
def test_the_time_limit_signal_requeues_and_resumes_and_a_user_error_is_not_requeued(slurm, tmp_path, uninterrupted):
    data = write_tiny_pacs(tmp_path / "PACS", per_class=4)
    missing = tmp_path / "no_such_folder"
    tiny_sweep(tmp_path, {"lr": {"value": 0.05}, "data_root": {"values": [str(data), str(missing)]}})
    driver = Driver(tmp_path, slurm, [])
    good_key, bad_key = (("data_root", str(data)), ("lr", 0.05)), (("data_root", str(missing)), ("lr", 0.05))
    wait_for(lambda: len(runs(tmp_path)) == 2 and held(runs(tmp_path)[good_key]), "the run to hold in its second epoch")
    good, bad = runs(tmp_path)[good_key], runs(tmp_path)[bad_key]
    # Before the time limit Slurm sends the job USR2 (submitit's --signal=USR2@120).
    slurm_run(slurm, "scancel", "--signal=USR2", job_id(good))
    release(slurm, job_id(good))
    output = driver.end()
    assert driver.process.returncode == 1 and "1 of 2 runs finished, 1 failed" in output, output
    assert output.strip().splitlines()[-1].startswith(f"error: 1 of 2 runs failed: {bad.name} (error: --data_root "
                                                      f"{missing}: no such folder"), output

    log = (good / "log.txt").read_text(errors="replace")
    assert log.count("--- Slurm job") == 2 and "stopped: SIGTERM at step 6" in log and "resumed from" in log, log
    assert json.loads((good / "status.json").read_text())["status"] == "finished"
    assert metrics(good) == uninterrupted

    status = json.loads((bad / "status.json").read_text())
    assert status["status"] == "failed" and f"--data_root {missing}: no such folder" in status["error"]
    assert (bad / "log.txt").read_text().count("--- Slurm job") == 1, "a user error was requeued"
    job = slurm_run(slurm, "scontrol", "show", "job", job_id(bad))
    assert "JobState=FAILED" in job and "Restarts=0" in job, job
    assert f"--data_root {missing}: no such folder" in (tmp_path / "out" / "table.csv").read_text()


@pytest.mark.slow
def test_the_comparison_table_on_slurm(slurm, tmp_path):
    """`sweep.py table` with the real scripts (AlexNet, one step): each cell a job, then the table.
    Each job takes both CPUs: one AlexNet training at a time (two at once hold 4 GB)."""
    data = write_tiny_pacs(tmp_path / "PACS")
    command = [sys.executable, str(ROOT / "sweep.py"), "table", "--dataset", "pacs", "--pairs", "photo:art_painting",
               "--methods", "baseline,dann", "--backbones", "alexnet", "--seeds", "0", "--out", "hw2", "--wandb", "off",
               "--launcher", "slurm", "--slurm_cpus_per_job", "2", "--slurm_gpus_per_job", "0", "--slurm_poll", "0.5",
               "--", "--cpu", "--pretrained=none", "--max_steps=1", "--batch_size=2", "--num_workers=0", "--no-tsne",
               f"--data_root={data}", f"--cache_dir={tmp_path / 'cache'}"]
    done = subprocess.run(command, cwd=tmp_path, env=clean_env(tmp_path, **slurm.env, OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("submit ") == 2
    table = (tmp_path / "hw2" / "table.md").read_text()
    assert "| trained on source |" in table and "| DANN |" in table and "pending" not in table, table


@pytest.mark.slow
def test_the_tiny_homework_on_slurm(slurm, tmp_path):
    """`sweep.py homework --scale tiny`: the grids as one job array, then the finals as another.
    LeNet for AlexNet: two jobs at once on the 2 CPUs, where two AlexNet trainings would hold
    4 GB (the local homework test trains LeNet too, two runs at a time)."""
    # 10 images a domain: the tiny scale's batch of 8 fits in the 9 the source trains on (--source_val holds one out)
    data = write_tiny_pacs(tmp_path / "PACS", domains=("photo", "art_painting", "cartoon", "sketch"), per_class=5)
    command = [sys.executable, str(ROOT / "sweep.py"), "homework", "--out", "hw", "--scale", "tiny", "--final_seeds",
               "0", "--wandb", "off", "--launcher", "slurm", "--slurm_cpus_per_job", "1", "--slurm_gpus_per_job", "0",
               "--slurm_poll", "0.5", "--", f"--data_root={data}", "--backbone=lenet", f"--cache_dir={tmp_path / 'cache'}"]
    done = subprocess.run(command, cwd=tmp_path, env=clean_env(tmp_path, **slurm.env, OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(list((tmp_path / "hw" / "slurm").glob("*_submission.sh"))) == 2, "one array per stage"
    report = (tmp_path / "hw" / "report.md").read_text()
    for row in ("3A", "3B", "4B", "4D", "upper"):
        assert f"| {row} |" in report, report


@pytest.mark.slow
def test_an_option_sbatch_refuses_is_one_line(slurm, tmp_path):
    tiny_sweep(tmp_path, {"lr": {"value": 0.05}})
    command = [sys.executable, str(ROOT / "sweep.py"), "run", "sweep.yaml", "--out", "out", "--launcher", "slurm",
               "--slurm_gpus_per_job", "0", "--slurm_partition", "no_such_partition"]
    done = subprocess.run(command, cwd=tmp_path, env=clean_env(tmp_path, **slurm.env), capture_output=True,
                          text=True, timeout=60)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("error: sbatch refused the jobs (") and "partition" in last, \
        done.stderr
    assert not list((tmp_path / "out" / "runs").glob("*/slurm.json"))


# ---------------------------------------------------------------------------- the multi-node script

@pytest.mark.slow  # starts bash (a fraction of a second)
def test_the_multinode_script_starts_one_launcher_per_node(tmp_path, monkeypatch):
    """Rendered by the command, checked by `bash -n`, then run by bash with stand-ins for srun (two
    nodes), scontrol and python: each node's launcher gets its own --machine_rank."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train_dann.py").write_text("")
    assert sweep.main(["multinode", "--nodes", "2", "--gpus_per_node", "4", "--run_dir", "runs/big",
                       "--slurm_sbatch", "account=lab", "--", "train_dann.py", "--epochs", "30",
                       "--wandb_tags", "two words"]) == 0
    script = (tmp_path / "runs" / "big.sbatch").read_text()
    assert subprocess.run(["bash", "-n", "runs/big.sbatch"], capture_output=True).returncode == 0
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4", "#SBATCH --account=lab", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@120", "#SBATCH --ntasks-per-node=1"):
        assert line in script.splitlines(), line

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins = {"srun": 'shift; for n in 0 1; do SLURM_NODEID=$n "$@"; done',  # drops --kill-on-bad-exit
                 "scontrol": "echo node-a; echo node-b", "python": 'echo "$@"'}
    for name, body in stand_ins.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    script = script.replace(f"PYTHON={sys.executable}", f"PYTHON={bin_dir / 'python'}")
    (tmp_path / "stand_in.sbatch").write_text(script)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "node-[a-b]"}
    done = subprocess.run(["bash", "stand_in.sbatch"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    nodes = done.stdout.splitlines()
    assert len(nodes) == 2
    for rank, line in enumerate(nodes):
        assert line.startswith("-m accelerate.commands.launch --quiet --config_file"), line
        assert (f"--multi_gpu --same_network --rdzv_backend static --num_machines 2 --num_processes 8 "
                f"--machine_rank {rank} --main_process_ip node-a --main_process_port 24242 train_dann.py "
                f"--epochs 30 --wandb_tags two words --output_dir=runs/big --resume=auto") in line, line


# ---------------------------------------------------------------------------- one-line errors

@pytest.mark.parametrize("argv, message", [
    (["run", "sweeps/3A_baseline_photo_art.yaml", "--out", "o", "--launcher", "python"],
     "--launcher python is now --command_style python"),
    (["table", "--pairs", "a:b", "--out", "o", "--launcher", "cluster"], "--launcher 'cluster': choose local or slurm"),
    (["homework", "--launcher", "slurm", "--slurm_time", "1:00"], "--slurm_time 1:00: a job needs more than 3 minutes"),
    (["homework", "--launcher", "slurm", "--slurm_time", "four hours"], "--slurm_time 'four hours': give minutes"),
    (["homework", "--launcher", "slurm", "--slurm_mem", "4 GB"], "--slurm_mem '4 GB': give sbatch's --mem"),
    (["homework", "--launcher", "slurm", "--slurm_sbatch", "time=10"], "--slurm_sbatch time=10: use --slurm_time"),
    (["homework", "--launcher", "slurm", "--slurm_sbatch=--signal=B:USR1@60"],
     "--slurm_sbatch --signal=B:USR1@60: the runner sets it"),
    (["homework", "--launcher", "slurm", "--slurm_cpus_per_job", "0"], "--slurm_cpus_per_job must be >= 1"),
    (["multinode", "--nodes", "2", "--run_dir", "r"], "give the training program and its flags after --"),
])
def test_mistakes_in_the_flags_are_one_line(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PATH", str(tmp_path))  # no Slurm here: flags are checked before Slurm is looked for
    with pytest.raises(UserError, match="^" + re.escape(message)) as e:
        sweep.main(argv)
    assert "\n" not in str(e.value)


def test_slurm_times_in_sbatch_formats():
    from dann.experiments.slurm import parse_time

    assert [parse_time(t) for t in ("240", "4:00:00", "30:30", "1-00:00:00", "2-12", "0-1:30")] == \
           [240, 240, 31, 1440, 3600, 90]


def test_a_job_with_several_gpus_launches_a_process_per_gpu():
    from dann.experiments.slurm import with_processes

    launch = [sys.executable, "-m", "dann.experiments.launch", "--quiet", "train_dann.py", "--lr=0.01"]
    assert with_processes(launch, 1) == launch
    assert with_processes(launch, 4) == [*launch[:3], "--multi_gpu", "--num_processes=4", *launch[3:]]
    with pytest.raises(UserError, match="^--slurm_gpus_per_job 4: one process per GPU needs the sweep's accelerate"):
        with_processes([sys.executable, "train_dann.py"], 4)


def test_without_slurm_the_launcher_says_where_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="^--launcher slurm: sbatch, squeue, scontrol, srun not found on PATH"):
        sweep.main(["run", str(ROOT / "sweeps" / "3A_baseline_photo_art.yaml"), "--out", str(tmp_path / "o"),
                    "--launcher", "slurm"])

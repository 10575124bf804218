"""The local runner: training runs as child processes, K at a time on each GPU (or the CPU).

The runner owns its children: each starts in its own process group with a parent-death
signal, so that killing the runner (SIGTERM, SIGINT, even SIGKILL) stops every run it
started; a SIGTERM reaches the training script, which checkpoints (runs are started with
--resume auto, so the next runner continues them). A job's folder holds command.txt,
log.txt, status.json and the program's results.json; a job is done when results.json holds
its metric. Launchers start through this interpreter (`python -m dann.experiments.launch` for
`accelerate launch`), never through PATH. A run's start and record (prepare, record) are shared
with dann/experiments/slurm.py.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dann.errors import UserError, strip_escapes
from dann.signals import die_with_parent

# Launchers a command may start with, and how this interpreter runs them.
# `accelerate launch` through dann/experiments/launch.py: it leaves SIGTERM to the training.
LAUNCHERS = {"accelerate": (["-m", "dann.experiments.launch"], "accelerate", 2),  # drops "launch"
             "torchrun": (["-m", "torch.distributed.run"], "torch", 1),
             "python": ([], None, 1), "python3": ([], None, 1)}


class Stopped(KeyboardInterrupt):
    """The runner was stopped by a signal (its runs checkpointed); `exit_code` is 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass(eq=False)  # one object per run: it keys the runners' tables
class Job:
    command: list[str]  # without --output_dir / --resume: the runner adds them
    run_dir: Path
    metric: str  # results.json key that marks the run finished
    params: dict = field(default_factory=dict)  # what params.json records


def resolve_launcher(command: list[str]) -> list[str]:
    """`accelerate launch ...`, `torchrun ...`, `python ...` through sys.executable; a missing
    launcher module or program is one UserError (before any folder is made)."""
    head = command[0]
    if head in LAUNCHERS:
        prefix, module, drop = LAUNCHERS[head]
        if module and importlib.util.find_spec(module) is None:
            raise UserError(f"the sweep's command starts with {head}, but the {module} package is not "
                            f"installed for {sys.executable}; pip install -r requirements.txt")
        return [sys.executable, *prefix, *command[drop:]]
    if Path(head).name == Path(sys.executable).name or head == sys.executable:
        return command
    if shutil.which(head) is None:
        raise UserError(f"the sweep's command starts with {head!r}, which is not found on PATH; "
                        f"use accelerate, torchrun or python")
    return command


def group_alive(pgid: int) -> bool:
    """Whether a process that is not a zombie is left in process group `pgid`: where PID 1 does
    not reap, an orphaned worker that has ended stays a zombie, which os.killpg still finds."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    if not Path("/proc").is_dir():
        return True
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]  # after "pid (comm)"
        except (OSError, IndexError, ValueError):
            continue  # ended while we looked
        if group == str(pgid) and state != "Z":
            return True
    return False


def wait_group(process: subprocess.Popen, deadline: float) -> bool:
    """Wait until the child and everything in its process group (a launcher's workers) ended;
    then the child's returncode is set."""
    while time.time() < deadline:
        process.poll()
        if not group_alive(process.pid):
            process.wait()  # the child may have ended after poll(): a zombie, reaped at once
            return True
        time.sleep(0.1)
    return False


def read_metric(run_dir: Path, metric: str) -> float | None:
    """The run's metric from its results.json; None if it has not finished."""
    try:
        value = json.loads((run_dir / "results.json").read_text())[metric]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value)


def tail(path: Path, lines: int = 20) -> str:
    """The last non-empty lines of a log (progress bars' carriage returns as line breaks, terminal
    escapes removed)."""
    try:
        text = strip_escapes(path.read_text(errors="replace").replace("\r", "\n"))
    except OSError:
        return ""
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def error_line(error: str) -> str:
    """The line of a failed run's log tail that says why: its last `error:` or `stopped:` line (a
    warning or a progress bar may come after it), else its last line."""
    lines = error.splitlines()
    said = [line for line in lines if line.startswith(("error:", "stopped:"))]
    return (said or lines or [""])[-1]


def failures(jobs: list[Job], what: str = "runs") -> str:
    """'' when no job failed; else one line: how many failed, and why (each one's error line)."""
    failed = []
    for job in jobs:
        try:
            status = json.loads((job.run_dir / "status.json").read_text())
        except (OSError, ValueError):
            continue
        if status.get("status") == "failed" and read_metric(job.run_dir, job.metric) is None:
            failed.append(f"{job.run_dir.name} ({error_line(status.get('error', '')) or 'no message'})")
    if not failed:
        return ""
    more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
    return f"{len(failed)} of {len(jobs)} {what} failed: {'; '.join(failed[:3])}{more}"


def slots_for(gpus: list[str] | None, runs_per_gpu: int) -> list[str | None]:
    """One slot per concurrent run: K per GPU id, or K on the CPU (None) without GPUs."""
    return [gpu for gpu in (gpus or [None]) for _ in range(runs_per_gpu)]


class Runner:
    """Runs jobs in slots until all are done; stops every child when it is stopped itself."""

    def __init__(self, slots: list[str | None], wandb_mode: str = "offline"):
        self.slots, self.wandb_mode = slots, wandb_mode
        self.running: dict[int, tuple] = {}  # slot index -> (process, log, job, start time)

    def run(self, jobs: list[Job]) -> None:
        todo = unfinished(jobs)
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while todo or self.running:
                for i, slot in enumerate(self.slots):
                    entry = self.running.get(i)
                    if entry is not None and entry[0].poll() is not None:
                        self._record(*entry)
                        del self.running[i]
                    if i not in self.running and todo:
                        self.running[i] = self._start(todo.pop(0), slot)
                time.sleep(0.2)
        finally:
            self._terminate_all()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _stop(self, signum, frame):
        raise Stopped(f"{signal.Signals(signum).name}: the runs were stopped; start the runner again to continue "
                      f"them", signum)

    def _terminate_all(self) -> None:
        """SIGTERM to every child's process group (the training scripts checkpoint), then SIGKILL:
        after 60 s, or at once on a second stop signal."""
        for process, log, job, _ in self.running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.time() + 60  # time to save a checkpoint
        try:
            for process, log, job, _ in self.running.values():
                wait_group(process, deadline)
        except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM: no more waiting
            pass
        finally:
            for process, log, job, _ in self.running.values():
                if group_alive(process.pid):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                log.close()
            self.running.clear()

    def _start(self, job: Job, slot: str | None):
        command = prepare(job)
        env = run_env(self.wandb_mode)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        elif "OMP_NUM_THREADS" not in env:  # K runs on the CPU share its cores instead of fighting for them
            env["OMP_NUM_THREADS"] = str(max(1, cpu_cores() // len(self.slots)))
        where = "" if slot is None else f" on GPU {slot}"
        print(f"start {job.run_dir.name}{where}: {shlex.join(command)}", flush=True)
        log = open(job.run_dir / "log.txt", "a")
        # Own process group: the runner stops the whole tree (a launcher and its workers).
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True, preexec_fn=die_with_parent)
        return process, log, job, time.time()

    def _record(self, process, log, job: Job, start: float) -> None:
        log.close()
        say(job, record(job, process.returncode, time.time() - start))


def unfinished(jobs: list[Job]) -> list[Job]:
    """The jobs whose results.json lacks the metric, their launchers resolved (a missing one
    fails before any folder is made); the others are named as skipped."""
    todo = [job for job in jobs if read_metric(job.run_dir, job.metric) is None]
    for job in jobs:
        if job not in todo:
            print(f"skip {job.run_dir.name} (finished)", flush=True)
    for job in todo:
        job.command = resolve_launcher(job.command)
    return todo


def prepare(job: Job) -> list[str]:
    """Ready the job's folder for a start (params.json, command.txt; no stale status.json) and
    return the command with the run's folder: every start continues its checkpoint."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    (job.run_dir / "status.json").unlink(missing_ok=True)
    (job.run_dir / "params.json").write_text(json.dumps(job.params, indent=2))
    command = [*job.command, f"--output_dir={job.run_dir}", "--resume=auto"]
    (job.run_dir / "command.txt").write_text(shlex.join(command) + "\n")
    return command


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_env(wandb_mode: str) -> dict:
    """The environment of a training run: it stops with its parent; W&B in the runner's mode."""
    env = {**os.environ, "DANN_EXIT_WITH_PARENT": "1"}
    if wandb_mode in ("online", "offline"):
        env["WANDB_MODE"] = wandb_mode
    return env


def record(job: Job, returncode: int, seconds: float) -> dict:
    """Write and return status.json of an ended run: finished, or failed with the log's last lines."""
    value = read_metric(job.run_dir, job.metric)
    status = {"status": "finished" if returncode == 0 and value is not None else "failed",
              "returncode": returncode, "seconds": round(seconds, 1)}
    if status["status"] == "failed":
        status["error"] = tail(job.run_dir / "log.txt") or f"exit code {returncode}"
        if returncode == 0:
            status["error"] += f"\n(results.json has no {job.metric})"
    (job.run_dir / "status.json").write_text(json.dumps(status, indent=2))
    return status


def say(job: Job, status: dict) -> None:
    """One line for an ended run: its metric, or its error line."""
    error = f" -- {error_line(status['error'])}" if status["status"] == "failed" else ""
    print(f"{status['status']} {job.run_dir.name}: {job.metric}={read_metric(job.run_dir, job.metric)}{error}",
          flush=True)

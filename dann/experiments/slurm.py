"""Grids on a Slurm cluster through submitit: every run one job (one job array per stage), running
the local runner's training command in the run's own folder. A stop signal (USR2 before the time
limit, SIGTERM on preemption, requeue or scancel) makes the training checkpoint and the job
requeue; the requeued job resumes (--resume=auto). Each run's folder records its job (slurm.json),
so a driver started again submits only runs with no result and no live job (squeue says which).
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dann.signals import die_with_parent
from dann.errors import UserError
from dann.experiments.local import (Job, Stopped, prepare, read_metric, record, run_env, say, tail, unfinished,
                                   wait_group)

ROOT = Path(__file__).resolve().parents[2]  # the checkout: sweeps/, train_dann.py
SIGNAL_DELAY_S = 120  # submitit's USR2 comes this long before the time limit: time to save a checkpoint
# squeue's states of a job that is over; any other (PENDING, RUNNING, COMPLETING, REQUEUED...) is live.
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "REVOKED", "TIMEOUT"}
# sbatch options the runner sets itself, and the flag that sets them (None: the runner alone).
OWN_OPTIONS = {"time": "--slurm_time", "partition": "--slurm_partition", "gpus-per-node": "--slurm_gpus_per_job",
               "cpus-per-task": "--slurm_cpus_per_job", "mem": "--slurm_mem", "array": "--slurm_array_parallelism",
               "output": None, "error": None, "signal": None, "open-mode": None, "job-name": None}


@dataclass
class SlurmSettings:
    partition: str = ""  # '': the cluster's default
    time_min: int = 240
    gpus_per_job: int = 1
    cpus_per_job: int = 4
    mem: str = ""  # sbatch's --mem, e.g. 32G; '': the cluster's default
    array_parallelism: int = 256  # array tasks running at once
    sbatch: dict = field(default_factory=dict)  # other options: {"account": "lab", "exclusive": True}
    poll_s: float = 30.0  # seconds between two squeue calls while waiting


def parse_time(text: str) -> int:
    """--slurm_time in sbatch's formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS), in minutes."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise UserError(f"--slurm_time {text!r}: give minutes or sbatch's [D-]HH:MM:SS, e.g. 240 or 1-00:00:00")
    days, *parts = match.groups()
    numbers = [int(p) for p in parts if p is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + sum(n * s for n, s in zip(numbers, (3600, 60, 1)))
    else:  # MM, MM:SS or HH:MM:SS
        seconds = sum(n * s for n, s in zip(numbers, {1: (60,), 2: (60, 1), 3: (3600, 60, 1)}[len(numbers)]))
    if seconds <= SIGNAL_DELAY_S + 60:
        raise UserError(f"--slurm_time {text}: a job needs more than {SIGNAL_DELAY_S // 60 + 1} minutes: the "
                        f"checkpoint signal comes {SIGNAL_DELAY_S} s before the limit")
    return math.ceil(seconds / 60)


def sbatch_options(items: list[str]) -> dict:
    """--slurm_sbatch KEY=VALUE (or KEY for a bare sbatch flag), e.g. account=lab, exclusive."""
    options = {}
    for item in items:
        key, _, value = item.lstrip("-").partition("=")
        if key in OWN_OPTIONS:
            owner = OWN_OPTIONS[key]
            raise UserError(f"--slurm_sbatch {item}: " + (f"use {owner}" if owner else
                            "the runner sets it (the job's log and its checkpoint signal)"))
        options[key] = value if value else True
    return options


def check_mem(mem: str) -> str:
    if mem and not re.fullmatch(r"\d+[KMGT]?", mem):
        raise UserError(f"--slurm_mem {mem!r}: give sbatch's --mem, e.g. 32G or 16000M")
    return mem


def job_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: squeue's state} of the jobs Slurm still knows (the recently ended ones too)."""
    if not job_ids:
        return {}
    done = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T",
                           f"--jobs={','.join(job_ids)}"], capture_output=True, text=True, timeout=120)
    if done.returncode and "Invalid job id" in done.stderr:
        return {}  # none of them is known any more
    if done.returncode:
        raise UserError(f"squeue failed ({(done.stderr.strip().splitlines() or ['no message'])[-1]}); is the "
                        f"Slurm controller up? (scontrol ping)")
    return dict(line.split("|", 1) for line in done.stdout.split() if "|" in line)


def recorded_job(run_dir: Path) -> str | None:
    """The Slurm job id last submitted for this run (slurm.json), if any."""
    try:
        return json.loads((run_dir / "slurm.json").read_text())["job_id"]
    except (OSError, ValueError, KeyError):
        return None


def with_processes(command: list[str], gpus: int) -> list[str]:
    """An `accelerate launch` command with one process per GPU of the job."""
    if gpus <= 1:
        return command
    if command[1:3] != ["-m", "dann.experiments.launch"]:
        raise UserError(f"--slurm_gpus_per_job {gpus}: one process per GPU needs the sweep's accelerate launch "
                        f"command; drop --command_style python")
    return [*command[:3], "--multi_gpu", f"--num_processes={gpus}", *command[3:]]


class SlurmRunner:
    """Runs jobs as Slurm jobs and waits until all have ended: dann.experiments.local.Runner's interface and
    restart rule. Stopping the driver stops the waiting, not the jobs."""

    def __init__(self, folder: str | Path, settings: SlurmSettings, wandb_mode: str = "offline", name: str = "dann"):
        missing = [tool for tool in ("sbatch", "squeue", "scontrol", "srun") if shutil.which(tool) is None]
        if missing:
            raise UserError(f"--launcher slurm: {', '.join(missing)} not found on PATH; run this on a Slurm "
                            f"cluster's login node, or use --launcher local")
        self.folder, self.settings, self.wandb_mode, self.name = Path(folder), settings, wandb_mode, name

    def run(self, jobs: list[Job]) -> None:
        todo = unfinished(jobs)
        recorded = {job: recorded_job(job.run_dir) for job in todo}
        states = job_states([i for i in recorded.values() if i])
        waiting = {job: i for job, i in recorded.items() if i in states and states[i] not in ENDED}
        for job, job_id in waiting.items():
            print(f"wait {job.run_dir.name}: its Slurm job {job_id} is {states[job_id].lower()}", flush=True)
        waiting.update(self._submit([job for job in todo if job not in waiting]))
        previous = signal.signal(signal.SIGTERM, self._stop)
        try:
            self._wait(waiting)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Stopped)
            raise Stopped("the Slurm jobs go on (squeue --me); run the same command again to wait for them and "
                          "write the table", getattr(e, "exit_code", 128 + signal.SIGINT) - 128) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _stop(self, signum, frame):
        raise Stopped(signal.Signals(signum).name, signum)

    def _parameters(self) -> dict:
        s = self.settings
        extra = {"requeue": True, **({"mem": s.mem} if s.mem else {}), **s.sbatch}
        params = {"job_name": self.name, "time": s.time_min, "cpus_per_task": s.cpus_per_job,
                  "array_parallelism": s.array_parallelism, "signal_delay_s": SIGNAL_DELAY_S,
                  "stderr_to_stdout": True, "additional_parameters": extra,
                  # the job unpickles dann.experiments.slurm.TrainingJob: this checkout, wherever the driver started
                  "setup": [f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"]}
        if s.partition:
            params["partition"] = s.partition
        if s.gpus_per_job:
            params["gpus_per_node"] = s.gpus_per_job
        return params

    def _submit(self, jobs: list[Job]) -> dict[Job, str]:
        """One job array for all of `jobs` (a plain job for one); their ids go to slurm.json."""
        if not jobs:
            return {}
        import submitit

        executor = submitit.SlurmExecutor(folder=self.folder)
        executor.update_parameters(**self._parameters())
        trainings = []
        for job in jobs:
            job.command = with_processes(job.command, self.settings.gpus_per_job)
            trainings.append(TrainingJob(job, prepare(job), self.wandb_mode))
        try:
            with executor.batch():
                submitted = [executor.submit(training) for training in trainings]
        except submitit.core.utils.FailedJobError as e:
            reason = (str(e).strip().splitlines() or ["no message"])[-1]
            raise UserError(f"sbatch refused the jobs ({reason}); check the --slurm_* flags") from None
        ids = {}
        for job, training, slurm_job in zip(jobs, trainings, submitted):
            log = str(slurm_job.paths.stdout)
            (job.run_dir / "slurm.json").write_text(json.dumps({"job_id": slurm_job.job_id, "log": log}, indent=2))
            ids[job] = slurm_job.job_id
            print(f"submit {job.run_dir.name}: Slurm job {slurm_job.job_id}: {shlex.join(training.command)}",
                  flush=True)
        return ids

    def _wait(self, waiting: dict[Job, str]) -> None:
        seen = {}
        while waiting:
            states = job_states(list(waiting.values()))
            for job, job_id in list(waiting.items()):
                state = states.get(job_id, "")
                if state and state not in ENDED:
                    if seen.get(job) != state:
                        print(f"{state.lower()} {job.run_dir.name} (Slurm job {job_id})", flush=True)
                        seen[job] = state
                    continue
                del waiting[job]
                say(job, self._ended(job, job_id, state))
            if waiting:
                time.sleep(self.settings.poll_s)

    def _ended(self, job: Job, job_id: str, state: str) -> dict:
        """status.json of a run whose job is over: as the job wrote it, or why there is no result."""
        try:
            status = json.loads((job.run_dir / "status.json").read_text())
        except (OSError, ValueError):
            status = {}
        if read_metric(job.run_dir, job.metric) is not None or status.get("status") == "failed":
            return status or {"status": "finished"}
        if status.get("status") == "requeued":
            why = (f"stopped by {status['signal']} with a checkpoint, not requeued ({status.get('requeue_error')}); "
                   f"run the same command again to continue it")
        else:  # killed: past the time limit, out of memory, node failure, scancel
            log = json.loads((job.run_dir / "slurm.json").read_text())["log"]
            why = f"Slurm job {job_id} ended ({state or 'gone from squeue'}) without a result; its log: {log}"
        status = {"status": "failed", "slurm_state": state, "error": tail(job.run_dir / "log.txt", 5) + "\n" + why}
        (job.run_dir / "status.json").write_text(json.dumps(status, indent=2))
        return status


def _training_process() -> None:
    """In the training's process, before exec: stop with the job's process, and ignore USR2 (Slurm
    signals every process of a job; the job's process turns USR2 into the training's SIGTERM)."""
    die_with_parent()
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class TrainingJob:
    """What one Slurm job runs (pickled by submitit): the run's training command in its own process
    group, appending to the run's log.txt. On a stop signal the training checkpoints (SIGTERM), and
    the job requeues itself; a run that ends on its own without a result (a user error) fails its
    job, which is not requeued, with the error in status.json."""

    def __init__(self, job: Job, command: list[str], wandb_mode: str):
        self.job, self.command, self.wandb_mode = job, command, wandb_mode
        self.process: subprocess.Popen | None = None
        self.stopped_by: int | None = None
        self.signalled = False  # the training got its SIGTERM

    def __call__(self) -> None:
        import submitit

        job_id = submitit.JobEnvironment().job_id
        if read_metric(self.job.run_dir, self.job.metric) is not None:  # e.g. requeued by hand after its end
            print(f"skip {self.job.run_dir.name} (finished)", flush=True)
            return
        for signum in (signal.SIGTERM, signal.SIGUSR2):  # in place of submitit's: the training checkpoints itself
            signal.signal(signum, self._stop)
        (self.job.run_dir / "status.json").unlink(missing_ok=True)
        start = time.time()
        with open(self.job.run_dir / "log.txt", "a") as log:
            restarts = int(os.environ.get("SLURM_RESTART_COUNT", 0))
            log.write(f"--- Slurm job {job_id} on {socket.gethostname()}, start {restarts + 1}\n")
            log.flush()
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            env=run_env(self.wandb_mode), start_new_session=True,
                                            preexec_fn=_training_process)
            if self.stopped_by is not None:  # a signal while it started
                self._stop(self.stopped_by, None)
            wait_group(self.process, math.inf)  # a launcher's workers too: a checkpoint may still be written
        if self.stopped_by is not None and read_metric(self.job.run_dir, self.job.metric) is None:
            self._requeue(job_id)
        status = record(self.job, self.process.returncode, time.time() - start)
        say(self.job, status)
        if status["status"] == "failed":
            sys.exit(1)  # the job fails, and Slurm does not requeue a failed job

    def _stop(self, signum, frame) -> None:
        self.stopped_by = signum
        if self.process is not None and not self.signalled:  # once: Slurm signals twice (the job, srun's relay)
            self.signalled = True
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:  # ended already
                pass

    def _requeue(self, job_id: str) -> None:
        name = signal.Signals(self.stopped_by).name
        status = {"status": "requeued", "signal": name, "returncode": self.process.returncode}
        done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=120)
        if done.returncode:  # after a preemption or `scontrol requeue`, Slurm requeues the job itself
            status["requeue_error"] = done.stderr.strip()
        (self.job.run_dir / "status.json").write_text(json.dumps(status, indent=2))
        print(f"requeued {self.job.run_dir.name}: stopped by {name} with a checkpoint", flush=True)
        sys.exit(128 + self.stopped_by)

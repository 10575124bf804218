"""Checkpoints that survive a kill: atomic save, keep the last K, find the newest, resume;
the lock that keeps two live runs out of one folder.

A checkpoint is `<output_dir>/checkpoints/step_<step>/`: Accelerate's `save_state` (model
as safetensors, optimizer, GradScaler, RNG states of every process) plus `progress.json`,
`config.json` and `manifest.json` (every file's size and sha256). It is written to a hidden
temporary folder and renamed when complete, so a folder with the final name is always whole;
a resume checks every file before loading any, and refuses a damaged one in one line.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import load as read_pickled

from dann.errors import UserError, os_reason, unwritable

NAME = re.compile(r"^step_(\d+)$")
MANIFEST = "manifest.json"  # every other file's size and sha256, written last
RNG_KEYS = {"random_state", "numpy_random_seed", "torch_manual_seed"}  # what Accelerate saves per process


_HELD: set[Path] = set()  # the run folders this process has locked (its own locks never conflict)


def lock_run_dir(output_dir: str | Path):
    """Take <output_dir>/.lock, or refuse: another live run writes there. Returns the open
    lock file (`release_run_dir` gives it back).

    A POSIX record lock (lockf): it belongs to this process alone. Children never inherit it
    (an flock is shared with every forked child: decode workers orphaned by a kill -9 kept the
    folder locked), and the kernel releases it when the process ends, however it ends: the
    file a killed run leaves is taken over by the next."""
    output_dir = Path(output_dir)
    lock = output_dir / ".lock"
    if lock.resolve() in _HELD:  # checked first: closing a second handle would drop our lock
        raise UserError(f"--output_dir {output_dir} is in use by this process's own run; choose another "
                        f"--output_dir")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a+")
    except OSError as e:
        raise UserError(unwritable("--output_dir", output_dir, e)) from None
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"--output_dir {output_dir} is in use by another live run (pid {owner}); wait for "
                        f"it to end or stop it, or choose another --output_dir") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    _HELD.add(lock.resolve())
    return handle


def release_run_dir(handle, output_dir: str | Path, created: bool) -> None:
    """Remove the lock file and release the lock; a folder this run created and left empty
    (it failed before writing anything) goes too."""
    output_dir = Path(output_dir)
    lock = output_dir / ".lock"
    _HELD.discard(lock.resolve())
    lock.unlink(missing_ok=True)  # still ours: a second run fails on the lock
    handle.close()
    if created and output_dir.is_dir() and not any(output_dir.iterdir()):
        output_dir.rmdir()


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(folder: str | Path) -> list[Path]:
    """Finished checkpoints in `folder`, oldest first (temporary folders are not listed)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := NAME.match(p.name)) and (p / "progress.json").is_file()]
    return [p for _, p in sorted(found)]


def save(accelerator: Accelerator, folder: str | Path, state, config) -> Path:
    """Write a checkpoint of the prepared model/optimizer and the TrainState `state`; keep the newest
    `config.keep_checkpoints`. Every process must call it (each saves its RNG state)."""
    folder = Path(folder)
    final = folder / f"step_{state.step:08d}"
    tmp = folder / f".{final.name}.tmp"
    if final.exists():
        if damage(final) is None:  # saved already: a signal right after an epoch's checkpoint
            return final
        if accelerator.is_main_process:  # a damaged one (refused on resume): write it again
            shutil.rmtree(final)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / "config.json").write_text(json.dumps(config.flat(), indent=2))
            (tmp / "progress.json").write_text(json.dumps(state.state_dict()))
            write_manifest(tmp)
            tmp.rename(final)  # atomic: the final name appears only when all is written
            for old in complete_checkpoints(folder)[:-config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
    except Exception as e:  # OSError, or a library's own: safetensors raises SafetensorError on a full disk
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"writing checkpoint {final} failed ({os_reason(e)}); free disk space or choose "
                        f"another --output_dir; older checkpoints in {folder} are untouched") from None
    accelerator.wait_for_everyone()
    return final


def digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def write_manifest(folder: Path) -> None:
    """manifest.json: every other file of the checkpoint with its size and sha256, so that a resume
    can tell a damaged file (a bit flip, a truncation, a file overwritten) from a sound one."""
    files = {p.name: {"size": p.stat().st_size, "sha256": digest(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps(files, indent=1))


def damage(path: Path) -> str | None:
    """What is wrong with the files of checkpoint `path` ('<file> is missing', '<file> is damaged
    (why)'), or None. Every file is checked against the size and sha256 recorded when it was saved
    (checkpoints written before manifest.json have none), then config.json, progress.json and every
    process's RNG state are read back (Accelerate skips an unreadable RNG state with an info log:
    the resume would not be exact)."""
    manifest = path / MANIFEST
    if manifest.exists():
        try:
            recorded = json.loads(manifest.read_text())
        except ValueError as e:
            return f"{manifest} is damaged (not JSON: {e})"
        for name, saved in recorded.items():
            file = path / name
            if not file.is_file():
                return f"{file} is missing"
            if file.stat().st_size != saved["size"] or digest(file) != saved["sha256"]:
                return f"{file} is damaged (its contents changed after it was saved)"
    for name in ("config.json", "progress.json"):
        try:
            if not isinstance(json.loads((path / name).read_text()), dict):
                return f"{path / name} is damaged (not a JSON object)"
        except FileNotFoundError:
            return f"{path / name} is missing"
        except (OSError, ValueError) as e:
            return f"{path / name} is damaged ({type(e).__name__}: {e})"
    for file in sorted(path.glob("random_states_*.pkl")):
        try:
            states = read_pickled(file)  # Accelerate's own reader (weights_only)
        except Exception as e:  # noqa: BLE001 -- unpickling fails in many ways
            return f"{file} is damaged ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        if not isinstance(states, dict) or not RNG_KEYS <= states.keys():
            return f"{file} is damaged (it holds no RNG state)"
    return None


def older_than(path: Path) -> str:
    """How to go on when checkpoint `path` cannot be used: the checkpoint before it, if any."""
    older = [p for p in complete_checkpoints(path.parent) if p.name < path.name]
    if older:
        return f"resume from an older checkpoint: --resume {older[-1]}"
    return f"no older checkpoint is left: remove {path} and start again with --resume auto"


def find_resume(resume: str, output_dir: str) -> Path | None:
    """The checkpoint `--resume` names: 'auto' (newest in output_dir, None if there is none),
    a checkpoint folder, or a run folder (its newest checkpoint)."""
    if not resume:
        return None
    if resume == "auto":
        found = complete_checkpoints(checkpoint_dir(output_dir))
        return found[-1] if found else None
    path = Path(resume)
    if (path / "progress.json").is_file():
        return path
    found = complete_checkpoints(checkpoint_dir(path)) or complete_checkpoints(path)
    if not found:
        raise UserError(f"--resume {resume}: no complete checkpoint there; give a run folder "
                        f"(with checkpoints/step_*), one checkpoints/step_* folder, or 'auto'")
    return found[-1]


def check_fresh(output_dir: str | Path) -> None:
    """Refuse to start a new run where an earlier run's checkpoints would mix with its own, or
    where its results would be overwritten."""
    found = complete_checkpoints(checkpoint_dir(output_dir))
    if found:
        raise UserError(f"--output_dir {output_dir} already holds checkpoints of an earlier run "
                        f"({found[-1].name}); continue it with --resume auto, or choose another --output_dir")
    if (Path(output_dir) / "results.json").exists():
        raise UserError(f"--output_dir {output_dir} already holds the results of an earlier run (results.json); "
                        f"choose another --output_dir, or run it again there with --resume auto")


def run_dir_of(resume: str) -> str:
    """The output_dir a `--resume PATH` run continues in (for runs started without one)."""
    path = Path(resume)
    if NAME.match(path.name) and path.parent.name == "checkpoints":
        return str(path.parent.parent)
    return str(path.parent if path.name == "checkpoints" else path)


def progress_damage(file: Path, progress: dict, state) -> str | None:
    """What is wrong with a checkpoint's progress (it drives the schedules and where training goes on)."""
    if not dataclasses.is_dataclass(state):
        return None
    expected = {f.name for f in dataclasses.fields(state)}
    missing, unknown = sorted(expected - progress.keys()), sorted(progress.keys() - expected)
    if missing or unknown:
        return (f"{file} is damaged (other keys than a checkpoint's: "
                + "; ".join(f"{what} {', '.join(names)}" for what, names in (("missing", missing), ("unknown", unknown))
                            if names) + ")")
    if not all(isinstance(progress[k], int) and progress[k] >= 0 for k in ("step", "epoch")):
        return f"{file} is damaged (step and epoch must be counts, got {progress['step']!r}, {progress['epoch']!r})"
    return None


def load(accelerator: Accelerator, path: Path, state, config) -> None:
    """Restore model, optimizer, RNG states and the TrainState `state` from checkpoint `path`.

    Tensors are read with weights_only=True (Accelerate's loader) and progress from JSON;
    Accelerate's registered objects are not used because it unpickles them unrestricted.
    """
    problem = damage(path)
    if problem is None:
        progress = json.loads((path / "progress.json").read_text())
        problem = progress_damage(path / "progress.json", progress, state)
    if problem:
        raise UserError(f"--resume {config.resume}: checkpoint file {problem}; {older_than(path)}")
    saved = json.loads((path / "config.json").read_text())
    now = config.flat()
    changed = [k for k in config.must_match() if k in saved and saved[k] != now.get(k)]
    if changed:
        raise UserError(f"--resume {path}: the checkpoint was trained with other "
                        + ", ".join(f"--{k} ({saved[k]} there, {now.get(k)} now)" for k in changed)
                        + "; use the same flags or start a new --output_dir")
    if not (path / f"random_states_{accelerator.process_index}.pkl").is_file():
        raise UserError(f"--resume {path}: no RNG state for process {accelerator.process_index}; "
                        f"resume with the same number of processes it was saved with")
    try:
        accelerator.load_state(str(path))
    except Exception as e:  # unpickling refused, shape mismatch, a damaged file
        raise UserError(f"--resume {config.resume}: cannot load the checkpoint {path} ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); it was written by another method or model, "
                        f"or is damaged; {older_than(path)}") from None
    rng_file = path / f"random_states_{accelerator.process_index}.pkl"
    if not torch.equal(torch.get_rng_state(), read_pickled(rng_file)["torch_manual_seed"]):
        raise UserError(f"--resume {config.resume}: the RNG state in {rng_file} could not be restored (the "
                        f"resumed run would not be exact); {older_than(path)}")
    state.load_state_dict(progress)
    notes = [f"--{k} {saved[k]} -> {v}" for k, v in config.flat().items()
             if k in saved and saved[k] != v and k not in ("resume", "output_dir")]
    accelerator.print(f"resumed from {path} at step {state.step} (epoch {state.epoch})"
                      + (f"; changed flags: {', '.join(notes)}" if notes else ""))

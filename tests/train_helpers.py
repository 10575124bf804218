"""Helpers for the tests that run the training command line as a user does: in a subprocess
(`tests/tiny_train.py`: the real `dann.cli.main` with the tiny backbone), on a tiny
generated PACS, on the CPU, for a step or two."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = Path(__file__).with_name("tiny_train.py")
QUICK = ["--cpu", "--backbone", "tiny", "--pretrained", "none", "--max_steps", "1", "--batch_size", "4",
         "--data_path", "tensor", "--num_workers", "1", "--tsne_samples", "6"]
SCRIPTS = {"train_dann.py": "dann", "train_baseline.py": "baseline"}


def clean_env(tmp_path: Path, **extra: str) -> dict:
    """The environment without W&B credentials (HOME moved, so no ~/.netrc either)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), WANDB_CONFIG_DIR=str(home / ".config" / "wandb"),
               WANDB_SILENT="true", PYTHONPATH=str(ROOT), **extra)
    return env


def train(script: str, data_root: Path, out: Path, *flags: str, env: dict, timeout: int = 300):
    """Run train_dann.py / train_baseline.py's main; returns (CompletedProcess, results.json or None)."""
    command = [sys.executable, str(TINY_TRAIN), SCRIPTS[script], *QUICK, "--data_root", str(data_root),
               "--cache_dir", str(data_root.parent / "cache"), "--output_dir", str(out), *flags]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=out.parent)
    results = out / "results.json"
    return proc, json.loads(results.read_text()) if results.is_file() else None


def inspect_wandb(run_dir: Path, env: dict) -> dict:
    """W&B's own reader of an offline run folder: `wandb leet inspect --summary --json`."""
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(run_dir)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)

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


def wandb_records(run_dir: Path, env: dict) -> list[dict]:
    """Every record of an offline run, as W&B's own reader gives them (`wandb leet inspect --json`):
    {"type": "run" | "config" | "history" | "summary" | "artifact" | ..., <type>: {...}}."""
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def wandb_run(run_dir: Path, env: dict) -> dict:
    """An offline run read back: name, group, job_type, config, summary (W&B's reader), the
    history rows ({_step: {key: value}}), the artifacts' (type, name, file paths), and its files."""
    records = wandb_records(run_dir, env)
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    history = {}
    for r in records:
        if r["type"] == "history":
            item = r["history"]["item"]
            history.setdefault(item["_step"], {}).update(item)
    artifacts = [(a["type"], a.get("name", ""), [c["path"] for c in a["manifest"]["contents"]])
                 for a in (r["artifact"] for r in records if r["type"] == "artifact")]
    inspected = inspect_wandb(run_dir, env)
    return {"name": run.get("display_name"), "group": run.get("run_group"), "job_type": run.get("job_type"),
            "config": inspected["config"], "summary": inspected["summary"], "state": inspected["state"],
            "history": history, "artifacts": artifacts,
            "files": sorted(str(p.relative_to(run_dir / "files")) for p in (run_dir / "files").rglob("*")
                            if p.is_file())}


def tensorboard_run(folder: Path) -> dict:
    """The event files of one TensorBoard run (a folder) read back with TensorBoard's own reader:
    scalars {tag: [(step, value)]}, images {tag: [step]}, and the hparams plugin's entry
    (the metric names of its experiment, the hyperparameters of its session)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    hparams = {"metrics": [], "hparams": {}}
    try:
        contents = events.PluginTagToContent("hparams").values()
    except KeyError:  # no hparams entry
        contents = []
    for content in contents:
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("experiment"):
            hparams["metrics"] = [m.name.tag for m in data.experiment.metric_infos]
        if data.HasField("session_start_info"):
            hparams["hparams"] = {k: v.number_value if v.HasField("number_value") else v.string_value
                                  for k, v in data.session_start_info.hparams.items()}
    return {"scalars": {t: [(e.step, e.value) for e in events.Scalars(t)] for t in tags["scalars"]},
            "images": {t: [e.step for e in events.Images(t)] for t in tags["images"]}, "hparams": hparams}

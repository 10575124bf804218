"""W&B sweep YAMLs without a W&B server: check a sweep config, expand its grid, run the grid
locally (one run after another, or one per GPU), and pick the best configuration of a local
sweep folder or of a W&B sweep, with the command for the final run.

A local sweep folder holds sweep.yaml (the config it ran), runs/<key>/ per grid point
(params.json, log.txt, status.json and the program's results.json) and table.md/table.csv.
Runs start as argument lists (no shell); a finished run (results.json with the metric) is
skipped when the runner is started again.
"""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from dann.errors import UserError

SWEEP_KEYS = {"program", "method", "metric", "parameters", "command", "name", "description",
              "project", "entity", "early_terminate", "run_cap", "job"}
METHOD_OF_PROGRAM = {"train_dann.py": "dann", "train_baseline.py": "baseline"}
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]  # W&B's default


# ---------------------------------------------------------------------------- sweep configs

def load_sweep(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no sweep file {path}; give a YAML from sweeps/, e.g. sweeps/4C_dann_xdomain.yaml")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    errors = check_sweep(config if isinstance(config, dict) else {})
    if errors:
        raise UserError(f"{path}: " + "; ".join(errors))
    return config


def check_sweep(config: dict) -> list[str]:
    """What is wrong with a W&B grid sweep config (empty if fine)."""
    errors = [f"unknown key {k!r}" for k in config if k not in SWEEP_KEYS]
    if config.get("method") != "grid":
        errors.append(f"method must be 'grid' (got {config.get('method')!r})")
    metric = config.get("metric") or {}
    if not isinstance(metric, dict) or not metric.get("name") or metric.get("goal") not in ("maximize", "minimize"):
        errors.append("metric needs a name and goal: maximize|minimize")
    if config.get("program") not in METHOD_OF_PROGRAM:
        errors.append(f"program must be one of {', '.join(METHOD_OF_PROGRAM)}")
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        errors.append("parameters is missing or empty")
        parameters = {}
    for name, spec in parameters.items():
        if not isinstance(spec, dict) or len(spec.keys() & {"value", "values"}) != 1 or set(spec) - {"value", "values"}:
            errors.append(f"parameter {name}: a grid needs exactly one of value / values")
        elif "values" in spec and (not isinstance(spec["values"], list) or not spec["values"]):
            errors.append(f"parameter {name}: values must be a non-empty list")
    command = config.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or "${program}" not in command or "${args}" not in command:
        errors.append("command must be a list containing ${program} and ${args}")
    return errors


def grid(config: dict) -> list[dict]:
    """Every grid point, as {parameter: value}, in the order W&B's grid search uses (the
    product of the parameters as listed, the last one varying fastest)."""
    names = list(config["parameters"])
    choices = [spec["values"] if "values" in spec else [spec["value"]] for spec in config["parameters"].values()]
    return [dict(zip(names, values)) for values in itertools.product(*choices)]


def run_key(params: dict) -> str:
    """A stable name for a grid point: the same parameters give the same folder on every rerun."""
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def flag_args(params: dict) -> list[str]:
    """Parameters as W&B's ${args} writes them: --name=value."""
    return [f"--{k}={v}" for k, v in params.items()]


def build_command(config: dict, params: dict, extra: list[str], launcher: str) -> list[str]:
    """The argument list for one run. launcher 'sweep': the YAML's command, with W&B's macros
    filled in; 'python': this interpreter on the program (no accelerate launch)."""
    args = flag_args(params) + list(extra)
    if launcher == "python":
        return [sys.executable, config["program"], *args]
    macros = {"${env}": [], "${interpreter}": [sys.executable], "${program}": [config["program"]],
              "${args}": args, "${args_no_hyphens}": [a.removeprefix("--") for a in args]}
    return [part for item in config.get("command", DEFAULT_COMMAND) for part in macros.get(item, [item])]


# ---------------------------------------------------------------------------- the local runner

def read_metric(run_dir: Path, metric: str) -> float | None:
    """The run's metric from its results.json; None if it has not finished."""
    try:
        value = json.loads((run_dir / "results.json").read_text())[metric]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value)


def _tail(path: Path, lines: int = 20) -> str:
    """The last non-empty lines of a log (progress bars' carriage returns as line breaks)."""
    try:
        text = path.read_text(errors="replace").replace("\r", "\n")
    except OSError:
        return ""
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def run_local(sweep_path: str | Path, out_dir: str | Path, extra: list[str] = (), launcher: str = "sweep",
              gpus: list[str] | None = None, wandb_mode: str = "offline", max_runs: int = 0) -> list[dict]:
    """Run every unfinished grid point of the sweep, len(gpus) at a time (one per GPU), and
    write the table. A failed run is recorded with its error and the others go on.
    wandb_mode: 'online' | 'offline' (WANDB_MODE for the runs) | 'off' (--report_to=none).
    max_runs > 0 stops after starting that many runs (a partial sweep, resumed next time)."""
    config = load_sweep(sweep_path)
    out_dir = Path(out_dir)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.yaml").write_text(Path(sweep_path).read_text())
    metric = config["metric"]["name"]
    extra = list(extra) + (["--report_to=none"] if wandb_mode == "off" else [])
    todo = []
    for params in grid(config):
        run_dir = out_dir / "runs" / run_key(params)
        if read_metric(run_dir, metric) is None:
            todo.append((params, run_dir))
        else:
            print(f"skip {run_dir.name} (finished): {flag_args(params)}")
    if max_runs:
        todo = todo[:max_runs]
    slots = {gpu: None for gpu in (gpus or [None])}
    while todo or any(slots.values()):
        for gpu, job in slots.items():
            if job is not None and job[0].poll() is not None:
                _record(job, metric)
                slots[gpu] = job = None
            if job is None and todo:
                slots[gpu] = _start(config, *todo.pop(0), extra, launcher, gpu, wandb_mode)
        time.sleep(0.2)
    rows = collect_local(out_dir)[1]
    write_table(rows, out_dir, config)
    return rows


def _start(config, params, run_dir: Path, extra, launcher, gpu, wandb_mode):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "status.json").unlink(missing_ok=True)
    (run_dir / "params.json").write_text(json.dumps(params, indent=2))
    command = build_command(config, params, [*extra, f"--output_dir={run_dir}"], launcher)
    (run_dir / "command.txt").write_text(shlex.join(command) + "\n")
    env = dict(os.environ)
    if wandb_mode in ("online", "offline"):
        env["WANDB_MODE"] = wandb_mode
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    print(f"start {run_dir.name}{'' if gpu is None else f' on GPU {gpu}'}: {shlex.join(command)}", flush=True)
    log = open(run_dir / "log.txt", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return process, log, run_dir, time.time()


def _record(job, metric: str) -> None:
    process, log, run_dir, start = job
    log.close()
    value = read_metric(run_dir, metric)
    status = {"status": "finished" if process.returncode == 0 and value is not None else "failed",
              "returncode": process.returncode, "seconds": round(time.time() - start, 1)}
    if status["status"] == "failed":
        status["error"] = _tail(run_dir / "log.txt") or f"exit code {process.returncode}"
        if process.returncode == 0:
            status["error"] += f"\n(results.json has no {metric})"
    (run_dir / "status.json").write_text(json.dumps(status, indent=2))
    print(f"{status['status']} {run_dir.name}: {metric}={value}"
          + (f" -- {status['error'].splitlines()[-1]}" if status["status"] == "failed" else ""), flush=True)


def collect_local(out_dir: str | Path) -> tuple[dict, list[dict]]:
    """(sweep config, one row per grid point: key, status, metric, params, error)."""
    out_dir = Path(out_dir)
    if not (out_dir / "sweep.yaml").is_file():
        raise UserError(f"{out_dir} is not a local sweep folder (no sweep.yaml); run `sweep.py run` first")
    config = load_sweep(out_dir / "sweep.yaml")
    metric = config["metric"]["name"]
    rows = []
    for params in grid(config):
        run_dir = out_dir / "runs" / run_key(params)
        value = read_metric(run_dir, metric)
        try:
            status = json.loads((run_dir / "status.json").read_text())
        except (OSError, ValueError):
            status = {}
        state = "finished" if value is not None else status.get("status", "pending")
        rows.append({"key": run_key(params), "status": state, "metric": value, "params": params,
                     "error": status.get("error", "") if state == "failed" else "",
                     "results": str(run_dir / "results.json") if value is not None else ""})
    return config, rows


def write_table(rows: list[dict], out_dir: Path, config: dict) -> None:
    """table.md and table.csv: every run, best first, with the parameters that vary."""
    metric, goal = config["metric"]["name"], config["metric"]["goal"]
    varying = [k for k in config["parameters"] if "values" in config["parameters"][k]
               and len(config["parameters"][k]["values"]) > 1]
    ordered = sorted(rows, key=lambda r: (r["metric"] is None,
                                          -(r["metric"] or 0) if goal == "maximize" else (r["metric"] or 0)))
    with open(out_dir / "table.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "status", metric, *varying, "error"])
        for r in ordered:
            error = r["error"].splitlines()[-1] if r["error"] else ""
            writer.writerow([r["key"], r["status"], r["metric"], *[r["params"][k] for k in varying], error])
    lines = [f"| run | status | {metric} | " + " | ".join(varying) + " |",
             "|---" * (3 + len(varying)) + "|"]
    for r in ordered:
        value = "" if r["metric"] is None else f"{r['metric']:.4f}"
        lines.append(f"| {r['key']} | {r['status']} | {value} | "
                     + " | ".join(str(r["params"][k]) for k in varying) + " |")
    (out_dir / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# ---------------------------------------------------------------------------- best configuration

def collect_wandb(path: str) -> tuple[dict, list[dict]]:
    """(sweep config, rows) of a W&B sweep 'entity/project/sweep_id' (or .../sweeps/id)."""
    import wandb

    parts = [p for p in path.removeprefix("wandb:").split("/") if p and p != "sweeps"]
    if len(parts) != 3:
        raise UserError(f"W&B sweep path {path!r} must be entity/project/sweep_id")
    sweep = wandb.Api().sweep("/".join(parts))
    config = sweep.config
    metric = config["metric"]["name"]
    rows = []
    for run in sweep.runs:
        value = run.summary.get(metric)
        rows.append({"key": run.id, "status": run.state if value is not None else "failed",
                     "metric": None if value is None else float(value),
                     "params": {k: run.config.get(k) for k in config["parameters"]},
                     "error": "", "results": f"wandb:{'/'.join(run.path)}"})
    return config, rows


def collect(source: str) -> tuple[dict, list[dict]]:
    """A local sweep folder, or a W&B sweep path."""
    if Path(source).is_dir():
        return collect_local(source)
    local_looking = Path(source.split("/")[0]).exists() or source.startswith((".", "/"))
    if source.startswith("wandb:") or (source.count("/") in (2, 3) and not local_looking):
        return collect_wandb(source)
    raise UserError(f"{source} is neither a local sweep folder nor a W&B sweep path entity/project/sweep_id")


def best_run(config: dict, rows: list[dict]) -> dict:
    done = [r for r in rows if r["metric"] is not None]
    if not done:
        raise UserError("no finished run in this sweep yet; run or wait for it, then ask again")
    sign = 1 if config["metric"]["goal"] == "maximize" else -1
    return max(done, key=lambda r: sign * r["metric"])


def final_command(config: dict, params: dict, target: str, seeds: str, name: str) -> list[str]:
    """The final run with the chosen hyperparameters: on `target`, over `seeds`, in its own
    W&B group and output folder (what `sweep.py report` reads)."""
    final = {k: v for k, v in params.items()
             if k not in ("target", "seed", "seeds", "output_dir", "run_name", "wandb_group")}
    final.update(target=target, seeds=seeds)
    if name:
        final.update(wandb_group=name, run_name=name, output_dir=f"runs/final/{name}")
    command = build_command(config, final, [], "sweep")
    return ["python" if part == sys.executable else part for part in command]  # as a user types it

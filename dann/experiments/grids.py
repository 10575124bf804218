"""W&B sweep YAMLs without a W&B server: check a sweep config, expand its grid, run the grid
(dann/experiments/local.py: K runs at a time per GPU; dann/experiments/slurm.py: a Slurm job per run), and pick the
best configuration of a local sweep folder or of a W&B sweep, with the command for the final run.

A local sweep folder holds sweep.yaml (the config it ran), extra_args.json (the flags given
after `--`, part of every run's identity), runs/<key>/ per grid point (params.json,
log.txt, status.json and the program's results.json) and table.md/table.csv. Runs start as
argument lists (no shell); a finished run (results.json with the metric) is skipped when
the runner is started again.
"""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import sys
from pathlib import Path

import yaml

from dann import plugins
from dann.errors import UserError
from dann.experiments.local import Job, Runner, read_metric, resolve_launcher, slots_for

SWEEP_KEYS = {"program", "method", "metric", "parameters", "command", "name", "description",
              "project", "entity", "early_terminate", "run_cap", "job"}
METHOD_OF_PROGRAM = {program: script for script, program in plugins.SCRIPTS.items()}  # train_dann.py: dann
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


def sweep_from_hparams(method: str, vary: list[str], fixed: dict, also: dict | None = None,
                       metric: str = "target_acc") -> dict:
    """A W&B grid sweep for `method`: the fields of its hyperparameters (declared in dann/plugins.py) named
    in `vary` (all those with sweep values when empty) over their declared values, `also`
    {flag: [values]} for others (e.g. lr), every `fixed` {flag: value} as a single value."""
    script = plugins.script_of(method)
    ranged = {f.name: f.metadata["sweep"] for f in plugins.hparams_of(plugins.METHODS, method).fields()
              if f.metadata["sweep"]}
    unknown = [name for name in vary if name not in ranged]
    if unknown:
        raise UserError(f"--vary {','.join(unknown)}: --method {method} declares no sweep values for it; "
                        f"those it does: {', '.join(ranged) or 'none'}")
    parameters = {**({} if script == "baseline" else {"method": {"value": method}}),
                  **{k: {"value": v} for k, v in fixed.items()},
                  **{name: {"values": ranged[name]} for name in (vary or ranged)},
                  **{k: {"values": v} for k, v in (also or {}).items()}}
    return {"name": f"{method}-grid", "program": plugins.SCRIPTS[script], "method": "grid",
            "metric": {"name": metric, "goal": "maximize"}, "parameters": parameters, "command": DEFAULT_COMMAND}


def run_key(params: dict, extra: list[str] = ()) -> str:
    """A stable name for a grid point and the flags given after `--`: the same run gets the
    same folder on every rerun, and other extra flags make other runs."""
    identity = {"params": params, "extra": list(extra)} if extra else params
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]


def flag_args(params: dict) -> list[str]:
    """Parameters as W&B's ${args} writes them: --name=value."""
    return [f"--{k}={v}" for k, v in params.items()]


def build_command(config: dict, params: dict, extra: list[str], command_style: str) -> list[str]:
    """The argument list for one run. command_style 'sweep': the YAML's command, with W&B's macros
    filled in; 'python': this interpreter on the program (no accelerate launch)."""
    args = flag_args(params) + list(extra)
    if command_style == "python":
        return [sys.executable, config["program"], *args]
    macros = {"${env}": [], "${interpreter}": [sys.executable], "${program}": [config["program"]],
              "${args}": args, "${args_no_hyphens}": [a.removeprefix("--") for a in args]}
    return [part for item in config.get("command", DEFAULT_COMMAND) for part in macros.get(item, [item])]


# ---------------------------------------------------------------------------- running a grid

def without_weights(params: dict, extra: list[str]) -> list[str]:
    """--save_model=false unless the sweep's parameters or the flags after `--` set --save_model: a
    grid keeps its numbers, not its models (an AlexNet DANN run's weights are 446 MB, a grid's tens of
    GB); the final runs of the chosen configurations save theirs. Not part of a run's identity."""
    asked = "save_model" in params or any(a.split("=")[0] in ("--save_model", "--no-save_model") for a in extra)
    return [] if asked else ["--save_model=false"]


def sweep_jobs(config: dict, out_dir: Path, extra: list[str], command_style: str, max_points: int = 0) -> list[Job]:
    """One runner job per grid point (the first `max_points` if > 0), in <out_dir>/runs/<key>."""
    points = grid(config)[:max_points or None]
    return [Job(build_command(config, params, [*extra, *without_weights(params, extra)], command_style),
                out_dir / "runs" / run_key(params, extra), config["metric"]["name"],
                {"params": params, "extra": list(extra)}) for params in points]


def run_sweep(sweep_path: str | Path, out_dir: str | Path, extra: list[str] = (), command_style: str = "sweep",
              runner=None, wandb_mode: str = "offline", max_runs: int = 0) -> list[dict]:
    """Run every unfinished grid point of the sweep with `runner` (dann.experiments.local.Runner: K at a time
    per GPU, by default one on the CPU; or dann.experiments.slurm.SlurmRunner: a Slurm job each) and write the
    table. A failed run is recorded with its error and the others go on. wandb_mode: 'online' |
    'offline' (WANDB_MODE for the runs) | 'off' (--report_to=none). max_runs > 0 starts at most
    that many runs (a partial sweep, resumed next time)."""
    config = load_sweep(sweep_path)
    out_dir = Path(out_dir)
    extra = list(extra) + (["--report_to=none"] if wandb_mode == "off" else [])
    jobs = sweep_jobs(config, out_dir, extra, command_style)
    for job in jobs:  # before any folder is made: a missing launcher is one clear error
        resolve_launcher(job.command)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.yaml").write_text(Path(sweep_path).read_text())
    (out_dir / "extra_args.json").write_text(json.dumps(extra))
    todo = [job for job in jobs if read_metric(job.run_dir, job.metric) is None]
    (runner or Runner(slots_for(None, 1), wandb_mode)).run(
        [job for job in jobs if job not in todo] + (todo[:max_runs] if max_runs else todo))
    rows = collect_local(out_dir)[1]
    write_table(rows, out_dir, config)
    return rows


def collect_local(out_dir: str | Path) -> tuple[dict, list[dict]]:
    """(sweep config, one row per grid point: key, status, metric, params, error)."""
    out_dir = Path(out_dir)
    if not (out_dir / "sweep.yaml").is_file():
        raise UserError(f"{out_dir} is not a local sweep folder (no sweep.yaml); run `sweep.py run` first")
    config = load_sweep(out_dir / "sweep.yaml")
    metric = config["metric"]["name"]
    extra_file = out_dir / "extra_args.json"
    extra = json.loads(extra_file.read_text()) if extra_file.is_file() else []
    rows = []
    for params in grid(config):
        run_dir = out_dir / "runs" / run_key(params, extra)
        value = read_metric(run_dir, metric)
        try:
            status = json.loads((run_dir / "status.json").read_text())
        except (OSError, ValueError):
            status = {}
        state = "finished" if value is not None else status.get("status", "pending")
        rows.append({"key": run_dir.name, "status": state, "metric": value, "params": params, "extra": extra,
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
                     "error": "", "results": f"wandb:{'/'.join(run.path)}",
                     "summary": {k: v for k, v in run.summary.items() if isinstance(v, (int, float))}})
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


def final_command(config: dict, chosen: dict, target: str, seeds: str, name: str,
                  output_dir: str = "") -> list[str]:
    """The final run of the chosen row (its parameters and the flags its sweep ran with after
    `--`): on `target`, over `seeds`, in its own W&B group and output folder (what `sweep.py
    report` reads; default runs/final/NAME)."""
    final = {k: v for k, v in chosen["params"].items()
             if k not in ("target", "seed", "seeds", "output_dir", "run_name", "wandb_group")}
    final.update(target=target, seeds=seeds)
    if name:
        final.update(wandb_group=name, run_name=name, output_dir=output_dir or f"runs/final/{name}")
    command = build_command(config, final, chosen.get("extra", []), "sweep")
    return ["python" if part == sys.executable else part for part in command]  # as a user types it

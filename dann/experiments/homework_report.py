"""The first homework's comparison table: 3A vs 3B (tuned on the test domain), 4B vs 4D (cross-domain
validated) and the trained-on-target upper bound, as mean +/- std over seeds, in Markdown
(for the README) and as a W&B table.

Each row comes from a results.json (or the folder holding it), a local sweep folder (its
best run), or W&B: wandb:entity/project/runs/ID or wandb:entity/project/sweeps/ID.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from dann.experiments import grids
from dann.errors import UserError

EXPERIMENTS = {  # the homework's names -> what the row means
    "3A": "baseline, hyperparameters tuned on the target (test) domain",
    "3B": "DANN, hyperparameters tuned on the target (test) domain",
    "4B": "baseline, hyperparameters by cross-domain validation (cartoon, sketch)",
    "4D": "DANN, hyperparameters by cross-domain validation (cartoon, sketch)",
    "upper": "baseline trained on the labeled target domain (upper bound)",
}
COLUMNS = ["experiment", "description", "method", "source -> target", "target accuracy (%)", "seeds", "source",
           "chosen by"]
CHOSEN_BY = {"3A": "oracle", "3B": "oracle", "4B": "xdomain", "4D": "xdomain"}  # the homework's rules
# Rows: the mean over seeds, ± the sample standard deviation (no ± for a single seed).


def _from_results(results: dict, origin: str) -> dict:
    config = results.get("config", {})
    method = results.get("method", config.get("method", "?"))
    source, target = config.get("source", "?"), config.get("target", "?")
    if config.get("train_on") == "target":  # the upper bound: trained and tested on the target
        method, source = method + " (on target)", target
    seeds = results.get("seeds") or [config.get("seed")]
    return {"method": method, "domains": f"{source} -> {target}",
            "mean": float(results["target_acc"]), "std": float(results.get("target_acc_std", 0.0)),
            "seeds": len(seeds) if isinstance(seeds, list) else int(seeds), "origin": origin}


def _wandb_run_results(path: str) -> dict:
    import wandb

    run = wandb.Api().run(path)
    summary = dict(run.summary)
    return {**summary, "config": dict(run.config), "method": run.config.get("method", "?")}


def load_row(source: str) -> dict:
    """One experiment's numbers from wherever they were recorded."""
    if source.startswith("wandb:"):
        path = source.removeprefix("wandb:")
        if "/sweeps/" in path:
            config, rows = grids.collect_wandb(path)
            return load_row(grids.best_run(config, rows)["results"])
        return _from_results(_wandb_run_results(path.replace("/runs/", "/")), source)
    path = Path(source)
    if path.is_dir() and (path / "sweep.yaml").is_file():
        config, rows = grids.collect_local(path)
        return {**load_row(grids.best_run(config, rows)["results"]), "origin": f"{source} (best run)"}
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise UserError(f"no results at {source}; give a run folder, results.json, sweep folder or wandb:PATH")
    results = json.loads(path.read_text())
    if "target_acc" not in results:
        raise UserError(f"{path} has no target_acc; is it a results.json of train_dann.py / train_baseline.py?")
    return _from_results(results, source)


def build_table(sources: dict[str, str], chosen_by: dict[str, str] | None = None) -> list[list]:
    """Rows in COLUMNS order, one per NAME=SOURCE, in the order given; `chosen_by`: the rule
    that chose each row's configuration (default: the homework's, for its experiment names)."""
    from dann.experiments.choosing import criterion  # the rules' labels

    chosen_by = {**{k: criterion(v).label for k, v in CHOSEN_BY.items()}, **(chosen_by or {})}
    table = []
    for name, source in sources.items():
        row = load_row(source)
        accuracy = f"{100 * row['mean']:.2f}" + (f" ± {100 * row['std']:.2f}" if row["seeds"] > 1 else "")
        description = EXPERIMENTS.get(name, "")
        base = name.split("-")[0]
        if not description and base in EXPERIMENTS:  # 3B-snd: 3B's grid, chosen by another rule
            method = EXPERIMENTS[base].split(",")[0]
            description = f"{method}, hyperparameters chosen on the {base} grid without target labels"
        table.append([name, description, row["method"], row["domains"], accuracy, row["seeds"], row["origin"],
                      chosen_by.get(name, "")])
    return table


def to_csv(table: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    writer.writerows(table)
    return buffer.getvalue()


def to_markdown(table: list[list]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table]
    return "\n".join(lines) + "\n"


def log_wandb_table(table: list[list], project: str, entity: str = "", name: str = "report",
                    mode: str | None = None) -> str:
    """The table as a W&B Table in a run of its own (mode: W&B's online/offline, default its
    own setting); returns the run's folder."""
    import wandb

    run = wandb.init(project=project, entity=entity or None, name=name, job_type="report", mode=mode)
    run.log({"comparison": wandb.Table(columns=COLUMNS, data=[[str(c) for c in row] for row in table])})
    run.finish()
    return run.dir

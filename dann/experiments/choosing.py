"""Choosing a configuration by a rule, and measuring the rules on a finished grid (the experiment
tier, above the training library, which never imports it).

A rule is `oracle` (the target accuracy: reads the target labels, the homework's part 3),
`xdomain` (the mean target accuracy on other domains: cross-domain validation, part 4), or a
registered unsupervised rule (dann/plugins.py SELECTION; a run records it as select/<name>).
`sweep.py selection` scores every rule on the user's own grid: for each (pair, seed), the
target accuracy of the configuration the rule picks, its regret against the oracle, and its
Spearman rank correlation with target accuracy across the configurations; then their mean
over pairs and seeds, as Markdown, CSV, a scatter plot per rule and a W&B table.
"""
from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from dann import plugins
from dann.experiments import grids
from dann.errors import UserError

# Parameters that say where and with which seed a configuration ran, not what it is: a
# configuration is matched across pairs (for xdomain) by its other parameters.
WHERE = ("source", "target", "dataset", "seed", "seeds", "output_dir", "run_name", "wandb_group")


@dataclass(frozen=True)
class Criterion:
    name: str  # oracle | xdomain | a rule of plugins.SELECTION
    key: str  # its value in results.json (and the W&B summary)
    goal: str  # maximize | minimize

    @property
    def label(self) -> str:
        """How a table names the rule that chose a row."""
        if self.name == "oracle":
            return "oracle (target accuracy: reads the target labels)"
        if self.name == "xdomain":
            return "xdomain (mean target accuracy on the other domains)"
        return f"{self.name} ({'higher' if self.goal == 'maximize' else 'lower'} is better)"


def names() -> list[str]:
    return ["oracle", "xdomain", *plugins.SELECTION]


def criterion(name: str) -> Criterion:
    if name == "oracle":
        return Criterion(name, "target_acc", "maximize")
    if name == "xdomain":
        return Criterion(name, "xdomain/target_acc_mean", "maximize")
    if name in plugins.SELECTION:
        return Criterion(name, f"select/{name}", plugins.SELECTION[name].goal)
    raise UserError(f"--selection {name}: unknown rule; choose from {', '.join(names())}")


def best_index(values: list[float | None], goal: str) -> int | None:
    """The position of the best value (the first of equals), None if there is none."""
    scored = [(v if goal == "maximize" else -v, -i) for i, v in enumerate(values) if v is not None]
    return -max(scored)[1] if scored else None


# ---------------------------------------------------------------------------- best --selection

def row_value(row: dict, key: str) -> float | None:
    """A sweep row's value of `key`: from its W&B summary or its results.json."""
    if "summary" in row:
        value = row["summary"].get(key)
    elif row.get("results"):
        value = json.loads(Path(row["results"]).read_text()).get(key)
    else:
        value = None
    return None if value is None else float(value)


def rescored(config: dict, rows: list[dict], name: str) -> tuple[dict, list[dict]]:
    """The sweep's (config, rows) with the rule `name` as the metric, for sweeps.best_run."""
    chosen = criterion(name)
    rows = [{**r, "metric": row_value(r, chosen.key) if r["metric"] is not None else None} for r in rows]
    finished = sum(r["status"] == "finished" for r in rows)
    if finished and not any(r["metric"] is not None for r in rows):
        hint = ("cross-domain runs (--target a,b) record it" if name == "xdomain" else
                "runs record it unless --select_rules leaves it out" if name != "oracle" else "")
        raise UserError(f"--selection {name}: none of the {finished} finished runs has {chosen.key}; {hint}")
    return {**config, "metric": {"name": chosen.key, "goal": chosen.goal}}, rows


# ---------------------------------------------------------------------------- the grid analysis

@dataclass
class Point:
    """One trained model of a grid: a configuration on a pair, with a seed."""
    folder: str
    config: str  # the grid point's run folder name
    identity: str  # the configuration, matched across pairs: its parameters less WHERE
    pair: tuple[str, str]
    seed: int
    target_acc: float
    scores: dict = field(default_factory=dict)  # rule -> its select/<rule> value


def load_points(folders: list[str]) -> list[Point]:
    """Every trained model of the finished runs of local sweep folders."""
    points = []
    for folder in folders:
        _, rows = grids.collect_local(folder)
        for row in rows:
            if not row["results"]:
                continue
            results = json.loads(Path(row["results"]).read_text())
            identity = json.dumps({k: v for k, v in row["params"].items() if k not in WHERE}, sort_keys=True)
            for run in results["runs"]:
                scores = {k.removeprefix("select/"): v for k, v in run.items() if k.startswith("select/")}
                points.append(Point(str(folder), row["key"], identity, (results["config"]["source"], run["target"]),
                                    run["seed"], run["target_acc"], scores))
    return points


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (ties take their mean rank); nan if either side is constant."""
    from scipy.stats import rankdata  # scikit-learn's dependency

    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    rx, ry = rankdata(x), rankdata(y)
    return float(statistics.correlation(list(rx), list(ry)))


def xdomain_scores(problem: list[Point], points: list[Point]) -> list[float | None]:
    """Each configuration's mean target accuracy on the pairs other than the problem's (all seeds)."""
    pair = problem[0].pair
    scores = []
    for p in problem:
        others = [q.target_acc for q in points if q.identity == p.identity and q.pair != pair]
        scores.append(statistics.fmean(others) if others else None)
    return scores


def problems(points: list[Point]) -> list[list[Point]]:
    """The choices a rule makes: one per (folder, pair, seed), among that grid's configurations."""
    groups: dict = {}
    for p in points:
        groups.setdefault((p.folder, p.pair, p.seed), []).append(p)
    return [g for g in groups.values() if len(g) >= 2]


def evaluate_rules(points: list[Point]) -> list[dict]:
    """One row per rule that has scores: its picks' target accuracy (%), regret against the
    oracle (points), worst regret and Spearman rho, averaged over the problems it could score.
    A tie between configurations counts as their mean target accuracy (a random pick's expectation)."""
    choices = problems(points)
    if not choices:
        raise UserError("no pair and seed of these grids has two finished configurations to choose between; "
                        "run (or finish) the grid first: sweep.py run SWEEP --out FOLDER")
    rules = [n for n in names() if n == "oracle" or n == "xdomain" or any(n in p.scores for p in points)]
    rows = []
    for name in rules:
        goal = criterion(name).goal
        picked, regrets, rhos = [], [], []
        for problem in choices:
            accs = [p.target_acc for p in problem]
            if name == "oracle":
                scores = accs
            elif name == "xdomain":
                scores = xdomain_scores(problem, points)
            else:
                scores = [p.scores.get(name) for p in problem]
            if any(s is None for s in scores):
                continue
            signed = [s if goal == "maximize" else -s for s in scores]
            top = max(signed)
            acc = statistics.fmean(a for a, s in zip(accs, signed) if s == top)
            picked.append(100 * acc)
            regrets.append(100 * (max(accs) - acc))
            rhos.append(spearman(signed, accs))
        if not picked:
            continue
        defined = [r for r in rhos if not math.isnan(r)]
        rows.append({"rule": name, "better": "higher" if goal == "maximize" else "lower",
                     "target_acc": statistics.fmean(picked), "regret": statistics.fmean(regrets),
                     "worst_regret": max(regrets), "spearman": statistics.fmean(defined) if defined else math.nan,
                     "problems": len(picked)})
    return rows


COLUMNS = ["rule", "better", "target acc. of its pick (%)", "regret (points)", "worst regret", "Spearman ρ",
           "choices"]


def table_rows(rows: list[dict]) -> list[list[str]]:
    return [[r["rule"], r["better"], f"{r['target_acc']:.2f}", f"{r['regret']:.2f}", f"{r['worst_regret']:.2f}",
             "" if math.isnan(r["spearman"]) else f"{r['spearman']:+.2f}", str(r["problems"])] for r in rows]


def to_markdown(rows: list[dict], points: list[Point]) -> str:
    configs = len({(p.folder, p.config) for p in points})
    pairs = sorted({p.pair for p in points})
    seeds = sorted({p.seed for p in points})
    lines = [f"Model selection on {configs} trained configurations ({len(points)} models) of "
             f"{len({p.folder for p in points})} grid(s): pairs {', '.join(f'{s} → {t}' for s, t in pairs)}; "
             f"seeds {', '.join(map(str, seeds))}. Each (grid, pair, seed) is one choice among its configurations; "
             "the columns average over the choices. Regret: the oracle's pick minus the rule's, in points of "
             "target accuracy; Spearman ρ: the rank correlation of the rule (signed so that higher is better) "
             "with target accuracy across the configurations; a tie counts as the tied configurations' mean.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(rows)]
    return "\n".join(lines) + "\n"


def write_runs_csv(points: list[Point], path: Path) -> None:
    """Every trained model with its target accuracy and its scores: what the scatter plots show."""
    rules = [n for n in plugins.SELECTION if any(n in p.scores for p in points)]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["grid", "run", "source", "target", "seed", "target_acc", *rules])
        for p in points:
            writer.writerow([p.folder, p.config, *p.pair, p.seed, p.target_acc, *[p.scores.get(n, "") for n in rules]])


def scatter(points: list[Point], rule: str, path: Path) -> None:
    """The rule's score against target accuracy, one point per trained model, a colour per pair."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    goal = criterion(rule).goal
    fig, ax = plt.subplots(figsize=(5, 4))
    cmap = plt.get_cmap("tab10")
    for i, pair in enumerate(sorted({p.pair for p in points})):
        mine = [p for p in points if p.pair == pair and rule in p.scores]
        ax.scatter([p.scores[rule] for p in mine], [100 * p.target_acc for p in mine], s=14, color=cmap(i % 10),
                   label=f"{pair[0]} → {pair[1]}", alpha=0.8)
    ax.set_xlabel(f"select/{rule} ({'higher' if goal == 'maximize' else 'lower'} is better)")
    ax.set_ylabel("target accuracy (%)")
    ax.set_title(f"{rule} vs target accuracy, one point per run", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_wandb(rows: list[dict], figures: dict[str, Path], project: str, entity: str = "") -> str:
    import wandb

    run = wandb.init(project=project, entity=entity or None, name="selection", job_type="selection")
    run.log({"selection": wandb.Table(columns=COLUMNS, data=table_rows(rows)),
             **{f"selection/{rule}": wandb.Image(str(path)) for rule, path in figures.items()}})
    run.finish()
    return run.dir


def analyse(folders: list[str], out: str | Path, wandb_project: str = "", wandb_entity: str = "") -> str:
    """`sweep.py selection`: selection.md, selection.csv, selection_runs.csv and
    scatter_<rule>.png in `out` (and a W&B table); returns the Markdown."""
    out = Path(out)
    points = load_points(folders)
    rows = evaluate_rules(points)
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows, points)
    (out / "selection.md").write_text(markdown)
    with open(out / "selection.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rule", "better", "target_acc", "regret", "worst_regret", "spearman", "choices"])
        writer.writerows([[r[k] for k in ("rule", "better", "target_acc", "regret", "worst_regret", "spearman",
                                          "problems")] for r in rows])
    write_runs_csv(points, out / "selection_runs.csv")
    figures = {}
    for row in rows:
        if row["rule"] in plugins.SELECTION:
            figures[row["rule"]] = out / f"scatter_{row['rule']}.png"
            scatter(points, row["rule"], figures[row["rule"]])
    if wandb_project:
        markdown += f"W&B: {log_wandb(rows, figures, wandb_project, wandb_entity)}\n"
    return markdown

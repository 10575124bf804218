"""A comparison table from one command: rows (methods, each with its recipe) x domain pairs x
backbones, each cell over seeds, as the second homework reports it.

    python sweep.py table --dataset digits --pairs mnist_m:svhn,svhn:mnist_m \\
        --methods baseline,dann,dsn,upper --backbones resnet18,lenet --seeds 0,1,2,3,4 --out runs/hw2
    python sweep.py table --recipes sweeps/tables/digits.yaml --out runs/digits_table   # the CPU benchmark

A row is a method and its flags: a name of --methods (the method with its defaults;
`baseline` trains on the source, `upper` on the labeled target), or a row of a recipes YAML
(`rows: {NAME: {method: M, FLAG: VALUE, ...}}`, with `common:` flags for every run and the
table's own defaults: dataset, pairs, backbones, seeds). Every cell is one training run over
all seeds, started by the runner (K at a time per GPU, or a Slurm job each; restartable); a
row whose recipe gives a flag a list of values is a grid, and each cell reports the point
--selection chooses (oracle, xdomain or an unsupervised rule; chosen.md lists the choices).
Flags after `--` go to every run that takes them. Written: table.md (mean ± std over
seeds), table.csv (every seed), and paired.md: each row's gain over the source-only row of
the same pair and seeds.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dann import plugins
from dann.config import get_args_parser
from dann.errors import UserError
from dann.experiments.choosing import best_index, criterion
from dann.experiments.local import Job, failures, read_metric

ROOT = Path(__file__).resolve().parents[2]  # the checkout: sweeps/, train_dann.py
LABELS = {"baseline": "trained on source", "upper": "trained on target (upper bound)", "dann": "DANN",
          "cdan": "CDAN", "dsn": "DSN", "mcc": "MCC", "adabn": "AdaBN", "pseudo_labels": "pseudo-labels"}
TABLE_KEYS = {"dataset", "pairs", "backbones", "seeds", "common", "rows"}


@dataclass
class Row:
    name: str  # the row's label in the table
    method: str  # 'baseline', 'upper' or a method of train_dann.py
    flags: dict = field(default_factory=dict)  # its recipe: flag -> value, or a list of values to choose from

    @property
    def script(self) -> str:
        return plugins.script_of("baseline" if self.method == "upper" else self.method)  # upper: --train_on target

    @property
    def grid(self) -> list[str]:
        """The flags it searches (given a list of values), chosen per cell by --selection."""
        return [k for k, v in self.flags.items() if isinstance(v, list)]

    def points(self) -> list[dict]:
        """Its recipes: one, or the grid's every combination."""
        values = [v if isinstance(v, list) else [v] for v in self.flags.values()]
        return [dict(zip(self.flags, combo)) for combo in itertools.product(*values)]


def rows_from_methods(methods: list[str]) -> list[Row]:
    unknown = [m for m in methods if m != "upper" and m not in plugins.METHODS]
    if unknown:
        raise UserError(f"--methods: unknown {', '.join(unknown)}; choose from upper, {', '.join(plugins.METHODS)}")
    return [Row(LABELS.get(m, m), m) for m in methods]


def load_recipes(path: str | Path) -> dict:
    """A recipes YAML: {rows: [Row], common: {flag: value}, and the table's defaults}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--recipes {path}: no such file; see sweeps/tables/digits.yaml for the format")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - TABLE_KEYS
    if unknown or not isinstance(spec.get("rows"), dict) or not spec["rows"]:
        raise UserError(f"--recipes {path}: needs `rows: {{NAME: {{method: ..., FLAG: VALUE}}}}`"
                        + (f"; unknown keys {', '.join(sorted(unknown))}" if unknown else ""))
    rows = []
    for name, recipe in spec["rows"].items():
        recipe = dict(recipe or {})
        method = recipe.pop("method", None)
        if method is None:
            raise UserError(f"--recipes {path}: row {name!r} has no method")
        rows += [Row(name, rows_from_methods([method])[0].method, recipe)]
    return {**spec, "rows": rows, "common": dict(spec.get("common") or {})}


def pick_rows(rows: list[Row], names: list[str], recipes: str) -> list[Row]:
    """The rows named (sweep.py table --row), in the recipes' order; an unknown name is an error."""
    unknown = [name for name in names if name not in {row.name for row in rows}]
    if unknown:
        raise UserError(f"--row {unknown[0]!r}: no such row in {recipes}; its rows: "
                        + "; ".join(row.name for row in rows))
    return [row for row in rows if row.name in names]


def flag_list(flags: dict) -> list[str]:
    return [f"--{k}={v}" for k, v in flags.items()]


def flags_for(script: str, method: str, extra: list[str]) -> list[str]:
    """The flags of `extra` (with their values) that train_<script>.py --method <method> takes."""
    parser = get_args_parser(script, method=method if script == "dann" else "")
    known = {option for action in parser._actions for option in action.option_strings}
    kept, i = [], 0
    while i < len(extra):
        flag = extra[i]
        has_value = "=" not in flag and i + 1 < len(extra) and not extra[i + 1].startswith("--")
        if flag.split("=", 1)[0] in known:
            kept += extra[i: i + 1 + has_value]
        i += 1 + has_value
    return kept


def check_row(row: Row, common: dict) -> None:
    """A recipe's flags must be ones its script and method take: one line before anything runs."""
    flags = {**common, **row.flags}
    backbone, discriminator = str(flags.get("backbone", "")), str(flags.get("discriminator", ""))
    parser = get_args_parser(row.script, row.method if row.script == "dann" else "", backbone, discriminator)
    known = {option.removeprefix("--") for action in parser._actions for option in action.option_strings}
    wrong = sorted(set(row.flags) - known)
    if wrong:
        raise UserError(f"row {row.name!r} ({row.method}): train_{row.script}.py takes no "
                        + ", ".join(f"--{w}" for w in wrong))


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def run_flags(dataset: str, pair: tuple[str, str], backbone: str, row: Row, point: dict, seeds: str,
              common: dict, extra: list[str]) -> list[str]:
    """The flags of train_<row.script>.py for one point of a row's recipe in one cell."""
    source, target = pair
    flags = [f"--dataset={dataset}", f"--source={source}", f"--target={target}", f"--backbone={backbone}",
             f"--seeds={seeds}"]
    flags += {"baseline": [], "upper": ["--train_on=target"]}.get(row.method, [f"--method={row.method}"])
    recipe = {k: v for k, v in {**common, **point}.items() if k != "backbone"}
    return flags + flags_for(row.script, row.method, flag_list(recipe)) + flags_for(row.script, row.method, extra)


def cell_jobs(out: Path, dataset: str, pair: tuple[str, str], backbone: str, row: Row, seeds: str,
              common: dict, extra: list[str]) -> list[Job]:
    """The row's runs in one cell: one per point of its grid (one for a plain recipe)."""
    source, target = pair
    jobs = []
    for point in row.points():
        flags = run_flags(dataset, pair, backbone, row, point, seeds, common, extra)
        command = ["accelerate", "launch", "--quiet", "--config_file", str(ROOT / "accelerate_config.yaml"),
                   str(ROOT / f"train_{row.script}.py"), *flags]
        identity = hashlib.sha1(json.dumps(flags).encode()).hexdigest()[:6]  # another recipe, another folder
        run_dir = out / "runs" / f"{source}-{target}" / backbone / f"{slug(row.name)}-{identity}"
        jobs.append(Job(command, run_dir, "target_acc",
                        {"pair": list(pair), "backbone": backbone, "row": row.name, "method": row.method,
                         "point": {k: point[k] for k in row.grid}}))
    return jobs


def shared_runs(jobs: list[Job]) -> list[Job]:
    """The jobs to run: a cell whose command another row's cell already has (a chosen recipe that
    is the reference one) reads that run's folder instead of training the same model again."""
    first: dict[tuple, Job] = {}
    for job in jobs:
        same = first.setdefault(tuple(job.command), job)
        job.run_dir = same.run_dir
    return list(first.values())


def job_value(job: Job, key: str) -> float | None:
    """`key` of a finished job's results.json (None if it has not finished or lacks it)."""
    if read_metric(job.run_dir, job.metric) is None:
        return None
    value = json.loads((job.run_dir / "results.json").read_text()).get(key)
    return None if value is None else float(value)


def choose_points(jobs: list[Job], selection: str) -> tuple[list[Job], str]:
    """One job per cell (pair, backbone, row): a grid row's point with the best --selection score
    (mean over seeds; xdomain: the point's mean target accuracy on the table's other pairs),
    relabeled with the rule; and chosen.md, the table of what was chosen."""
    cells: dict = {}
    for job in jobs:
        cells.setdefault((tuple(job.params["pair"]), job.params["backbone"], job.params["row"]), []).append(job)
    if all(len(c) == 1 for c in cells.values()):
        return jobs, ""
    chosen_by = criterion(selection)
    kept, lines = [], [f"Grid rows chosen per cell by {chosen_by.label}, the score's mean over seeds:", "",
                       "| row | pair | backbone | chosen | score | finished |", "|---|---|---|---|---|---|"]
    for (pair, backbone, row), candidates in cells.items():
        if len(candidates) == 1:
            kept.append(candidates[0])
            continue
        if selection == "xdomain":
            values = []
            for job in candidates:
                others = [job_value(j, "target_acc") for j in jobs if j.params["backbone"] == backbone
                          and j.params["row"] == row and j.params["point"] == job.params["point"]
                          and tuple(j.params["pair"]) != pair]
                values.append(statistics.fmean(others) if others and None not in others else None)
        else:
            values = [job_value(job, chosen_by.key) for job in candidates]
        best = best_index(values, chosen_by.goal)
        job = candidates[0 if best is None else best]
        kept.append(dataclasses.replace(job, params={**job.params, "row": f"{row} (by {chosen_by.name})"}))
        point = ", ".join(f"{k}={v}" for k, v in job.params["point"].items())
        score = "" if best is None else f"{values[best]:.4f}"
        lines.append(f"| {row} | {pair[0]} → {pair[1]} | {backbone} | {point if best is not None else 'none yet'} "
                     f"| {score} | {sum(v is not None for v in values)} of {len(values)} |")
    return kept, "\n".join(lines) + "\n"


def run_table(out: str | Path, *, dataset: str, pairs: list[tuple[str, str]], rows: list[Row],
              backbones: list[str], seeds: str, runner, wandb_mode: str = "off", common: dict | None = None,
              extra: list[str] = (), selection: str = "") -> str:
    """Train every cell with `runner` (dann.experiments.local.Runner or dann.experiments.slurm.SlurmRunner; finished
    ones are skipped), write table.md / table.csv / paired.md (and chosen.md for rows with a
    grid, chosen per cell by `selection`); returns the Markdown table."""
    out, common = Path(out), dict(common or {})
    for row in rows:
        check_row(row, common)
        if row.grid and not selection:
            raise UserError(f"row {row.name!r} searches {', '.join(row.grid)}: give --selection, how each cell "
                            f"chooses (oracle, xdomain or a rule such as snd)")
    if selection:
        criterion(selection)  # an unknown rule stops here, before anything runs
    extra = list(extra) + (["--report_to=none"] if wandb_mode == "off" else [])
    jobs = [job for pair in pairs for backbone in backbones for row in rows
            for job in cell_jobs(out, dataset, pair, backbone, row, seeds, common, extra)]
    start = time.time()
    runner.run(shared_runs(jobs))
    all_jobs = jobs
    jobs, chosen = choose_points(jobs, selection)
    markdown, csv_rows = table(jobs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(markdown)
    with open(out / "table.csv", "w", newline="") as f:
        csv.writer(f).writerows(csv_rows)
    (out / "paired.md").write_text(paired(jobs))
    if chosen:
        (out / "chosen.md").write_text(chosen)
    print(markdown + "\n" + paired(jobs) + "\n" + chosen + f"\n-> {out / 'table.md'} ({time.time() - start:.0f} s)",
          flush=True)
    failed = failures(all_jobs)
    if failed:
        raise UserError(f"{failed}; the table shows them as failed; fix them and run the same command again "
                        f"(finished runs are skipped)")
    return markdown


def seed_accuracies(job: Job) -> dict[int, float] | None:
    """{seed: target accuracy in %} of a finished cell, None if it has not finished."""
    if read_metric(job.run_dir, job.metric) is None:
        return None
    results = json.loads((job.run_dir / "results.json").read_text())
    return {r["seed"]: 100 * r["target_acc"] for r in results["runs"]}


def cell(job: Job) -> str:
    """'mean ± std' of the target accuracy over the seeds of one finished cell, in %."""
    accs = seed_accuracies(job)
    if accs is None:
        return "failed" if (job.run_dir / "status.json").is_file() else "pending"
    values = list(accs.values())
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def _grid(jobs: list[Job]):
    columns = list(dict.fromkeys((tuple(j.params["pair"]), j.params["backbone"]) for j in jobs))
    rows = list(dict.fromkeys(j.params["row"] for j in jobs))
    by_key = {(tuple(j.params["pair"]), j.params["backbone"], j.params["row"]): j for j in jobs}
    return columns, rows, by_key


def table(jobs: list[Job]) -> tuple[str, list[list[str]]]:
    """Rows: the table's rows; columns: (pair, backbone). Markdown (mean ± std) and CSV rows
    (mean ± std, then every seed's value)."""
    columns, rows, by_key = _grid(jobs)
    header = ["target accuracy (%)"] + [f"{s} → {t} ({b})" for (s, t), b in columns]
    lines = [header] + [[r] + [cell(by_key[pair, b, r]) for pair, b in columns] for r in rows]
    buffer = io.StringIO()
    buffer.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for line in lines[1:]:
        buffer.write("| " + " | ".join(line) + " |\n")
    csv_rows = [["row", "pair", "backbone", "mean ± std", "seed", "target_acc"]]
    for r in rows:
        for pair, b in columns:
            accs = seed_accuracies(by_key[pair, b, r]) or {}
            csv_rows += [[r, "->".join(pair), b, cell(by_key[pair, b, r]), s, f"{a:.2f}"] for s, a in accs.items()]
    return buffer.getvalue(), csv_rows


def paired(jobs: list[Job]) -> str:
    """Each row's target accuracy minus the source-only row's, seed by seed, on each column:
    mean ± std of the paired difference, and the lowest per-seed difference."""
    columns, rows, by_key = _grid(jobs)
    baseline = next((j.params["row"] for j in jobs if j.params["method"] == "baseline"), None)
    if baseline is None:
        return ""
    header = [f"gain over {baseline} (points)"] + [f"{s} → {t} ({b})" for (s, t), b in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if r == baseline:
            continue
        cells = []
        for pair, b in columns:
            base, accs = seed_accuracies(by_key[pair, b, baseline]), seed_accuracies(by_key[pair, b, r])
            if not base or not accs:
                cells.append("")
                continue
            diffs = [accs[s] - base[s] for s in accs if s in base]
            spread = f" ± {statistics.stdev(diffs):.1f}" if len(diffs) > 1 else ""
            cells.append(f"{statistics.fmean(diffs):+.1f}{spread} (min {min(diffs):+.1f})")
        lines.append("| " + " | ".join([r] + cells) + " |")
    return "\n".join(lines) + "\n"


def family(row: str) -> str:
    """A row's method family: its name before the recipe's description, 'DANN (reference)' -> 'DANN'."""
    return row.split(" (", 1)[0]


def choose_recipes(folder: str | Path) -> str:
    """Each family's recipe from a finished tuning table (its table.csv): the row of the family
    with the highest mean target accuracy over every pair and seed. Markdown: every row's mean per
    pair and overall, the chosen one in bold, and which row each leave-one-pair-out choice (on the
    other pairs only) would have picked: a choice that does not change is a robust one."""
    path = Path(folder) / "table.csv"
    if not path.is_file():
        raise UserError(f"{path}: no table.csv; run `sweep.py table` into {folder} first")
    with open(path) as f:
        records = list(csv.DictReader(f))
    pairs = list(dict.fromkeys(r["pair"] for r in records))
    accs: dict[str, dict[str, list[float]]] = {}
    for r in records:
        accs.setdefault(r["row"], {}).setdefault(r["pair"], []).append(float(r["target_acc"]))

    def mean_over(row: str, kept: list[str]) -> float:
        return statistics.fmean(a for p in kept for a in accs[row].get(p, []))

    complete = [row for row in accs if all(accs[row].get(p) for p in pairs)]
    lines = ["| row | " + " | ".join(p.replace("->", " → ") for p in pairs) + " | mean | leave-one-pair-out pick |",
             "|---|" + "---|" * (len(pairs) + 2)]
    for name in dict.fromkeys(family(row) for row in complete):
        rows = [row for row in complete if family(row) == name]
        best = max(rows, key=lambda row: mean_over(row, pairs))
        loo = [max(rows, key=lambda row: mean_over(row, [p for p in pairs if p != left])) for left in pairs]
        for row in rows:
            cells = [f"{statistics.fmean(accs[row][p]):.1f}" for p in pairs] + [f"{mean_over(row, pairs):.1f}"]
            label = f"**{row}**" if row == best else row
            picks = ", ".join(f"without {p}: {'same' if pick == best else pick}"
                              for p, pick in zip(pairs, loo)) if row == best else ""
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {picks} |")
    return "\n".join(lines) + "\n"

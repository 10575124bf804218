"""A comparison table from one command: methods x domain pairs x backbones, each over seeds,
as the second homework reports it (trained on source, DANN, DSN, trained on target).

    python sweep.py table --dataset digits --pairs mnist_m:svhn,svhn:mnist_m \\
        --methods baseline,dann,dsn,upper --backbones resnet18,lenet --seeds 0,1,2,3,4 --out runs/hw2

Every cell is one training run over all seeds (`--seeds`), started by the runner (K at a
time per GPU, or a Slurm job each; restartable); `upper` is train_baseline.py --train_on
target. Flags after `--` go to every run that takes them (the baseline's runs leave out
--alpha and the like).
The table (Markdown and CSV) holds the target accuracy, mean ± std over seeds.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
import time
from pathlib import Path

from dann.config import get_args_parser
from dann.runner import Job, read_metric

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"baseline": "trained on source", "upper": "trained on target (upper bound)",
          "dann": "DANN", "cdan": "CDAN", "dsn": "DSN"}


def flags_for(script: str, extra: list[str]) -> list[str]:
    """The flags of `extra` (with their values) that train_<script>.py takes."""
    known = {option for action in get_args_parser(script)._actions for option in action.option_strings}
    kept, i = [], 0
    while i < len(extra):
        flag = extra[i]
        has_value = "=" not in flag and i + 1 < len(extra) and not extra[i + 1].startswith("--")
        if flag.split("=", 1)[0] in known:
            kept += extra[i: i + 1 + has_value]
        i += 1 + has_value
    return kept


def cell_job(out: Path, dataset: str, pair: tuple[str, str], backbone: str, method: str, seeds: str,
             extra: list[str]) -> Job:
    source, target = pair
    script = "baseline" if method in ("baseline", "upper") else "dann"
    flags = [f"--dataset={dataset}", f"--source={source}", f"--target={target}", f"--backbone={backbone}",
             f"--seeds={seeds}"]
    flags += {"baseline": [], "upper": ["--train_on=target"]}.get(method, [f"--method={method}"])
    flags += flags_for(script, extra)
    command = ["accelerate", "launch", "--quiet", "--config_file", str(ROOT / "accelerate_config.yaml"),
               str(ROOT / f"train_{script}.py"), *flags]
    run_dir = out / "runs" / f"{source}-{target}" / backbone / method
    return Job(command, run_dir, "target_acc", {"pair": list(pair), "backbone": backbone, "method": method})


def run_table(out: str | Path, *, dataset: str, pairs: list[tuple[str, str]], methods: list[str],
              backbones: list[str], seeds: str, runner, wandb_mode: str = "off", extra: list[str] = ()) -> str:
    """Train every cell with `runner` (dann.runner.Runner or dann.slurm.SlurmRunner; finished ones
    are skipped), write table.md / table.csv; returns the Markdown."""
    out = Path(out)
    extra = list(extra) + (["--report_to=none"] if wandb_mode == "off" else [])
    jobs = [cell_job(out, dataset, pair, backbone, method, seeds, extra)
            for pair in pairs for backbone in backbones for method in methods]
    start = time.time()
    runner.run(jobs)
    markdown, rows = table(jobs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(markdown)
    with open(out / "table.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    print(markdown + f"\n-> {out / 'table.md'} ({time.time() - start:.0f} s)", flush=True)
    return markdown


def cell(job: Job) -> str:
    """'mean ± std' of the target accuracy over the seeds of one finished run, in %."""
    if read_metric(job.run_dir, job.metric) is None:
        return "failed" if (job.run_dir / "status.json").is_file() else "pending"
    results = json.loads((job.run_dir / "results.json").read_text())
    accs = [100 * r["target_acc"] for r in results["runs"]]
    return f"{statistics.fmean(accs):.1f} ± {statistics.stdev(accs):.1f}" if len(accs) > 1 else f"{accs[0]:.1f}"


def table(jobs: list[Job]) -> tuple[str, list[list[str]]]:
    """Rows: methods; columns: (pair, backbone); the same cells as Markdown and as CSV rows."""
    columns = list(dict.fromkeys((tuple(j.params["pair"]), j.params["backbone"]) for j in jobs))
    methods = list(dict.fromkeys(j.params["method"] for j in jobs))
    by_key = {(tuple(j.params["pair"]), j.params["backbone"], j.params["method"]): j for j in jobs}
    header = ["target accuracy (%)"] + [f"{s} → {t} ({b})" for (s, t), b in columns]
    rows = [header] + [[LABELS.get(m, m)] + [cell(by_key[pair, b, m]) for pair, b in columns] for m in methods]
    buffer = io.StringIO()
    buffer.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for row in rows[1:]:
        buffer.write("| " + " | ".join(row) + " |\n")
    return buffer.getvalue(), rows

"""The whole first homework from one command: the four grids (3A, 3B, 4A, 4C), the best
configurations (3A/3B on the test domain, as the homework's part 3 did; 4B/4D by
cross-domain validation; with --selection, also by unsupervised rules on the 3A/3B grids),
the final runs over seeds, the trained-on-target upper bound, and the report table
(Markdown, CSV, and a W&B table when tracking), which names the rule that chose each row.

    python sweep.py homework --out runs/homework                      # K runs on each GPU
    python sweep.py homework --out runs/homework --launcher slurm      # a Slurm job per run
    python sweep.py homework --out runs/homework --scale tiny -- --data_root=...   # CPU, minutes

Restartable: every stage skips what is finished (the runner's rule), so a homework killed and
started again redoes only the unfinished runs.
"""
from __future__ import annotations

import json
from pathlib import Path

from dann.experiments import homework_report
from dann.experiments.choosing import criterion, rescored
from dann.errors import UserError
from dann.experiments.local import Job, failures
from dann.experiments.grids import best_run, collect_local, final_command, load_sweep, sweep_jobs, write_table

ROOT = Path(__file__).resolve().parents[2]  # the checkout: sweeps/, train_dann.py
SWEEPS = {"3A": "3A_baseline_photo_art.yaml", "3B": "3B_dann_photo_art.yaml",
          "4A": "4A_baseline_xdomain.yaml", "4C": "4C_dann_xdomain.yaml"}
FINALS = {"3A": "3A", "3B": "3B", "4B": "4A", "4D": "4C"}  # experiment -> the sweep choosing its configuration
RULES = {"3A": "oracle", "3B": "oracle", "4B": "xdomain", "4D": "xdomain"}  # ... and how (the sweep's metric)
TARGET = "art_painting"
# --scale tiny: the pipeline end to end on a CPU in minutes; not a result.
TINY_FLAGS = ["--cpu", "--pretrained=none", "--max_steps=2", "--batch_size=8", "--no-tsne", "--num_workers=1"]
TINY_GRID_POINTS = 2  # the first grid points of each sweep


def with_paths(config: dict) -> dict:
    """The sweep's program and accelerate config as absolute paths: runs start from any folder."""
    command = [str(ROOT / part) if part == "accelerate_config.yaml" else part for part in config["command"]]
    return {**config, "program": str(ROOT / Path(config["program"]).name), "command": command}


def run_homework(out: str | Path, *, runner, final_seeds: str, scale: str = "full", wandb_mode: str = "offline",
                 extra: list[str] = (), selection: list[str] = ()) -> list[list]:
    """Every stage of the homework into `out`, each stage's runs with `runner` (dann.experiments.local.Runner
    or dann.experiments.slurm.SlurmRunner); returns the report table's rows. `selection`: rules that also
    choose the baseline's and DANN's configuration on the 3A and 3B grids (photo -> art_painting,
    reading no art_painting label): rows 3A-<rule>, 3B-<rule>."""
    out = Path(out)
    rows = [(name, sweep, RULES[name]) for name, sweep in FINALS.items()]  # (row, the grid it chooses on, rule)
    rows += [(f"{grid}-{rule}", grid, criterion(rule).name) for rule in selection if rule not in RULES.values()
             for grid in ("3A", "3B")]  # an unknown rule stops here, before anything runs
    extra = (TINY_FLAGS if scale == "tiny" else []) + list(extra) + (["--report_to=none"] if wandb_mode == "off" else [])

    # 1. The four grids in one pool (one Slurm array), so that every GPU stays busy until the last run.
    configs = {name: with_paths(load_sweep(ROOT / "sweeps" / file)) for name, file in SWEEPS.items()}
    jobs = []
    for name, config in configs.items():
        folder = out / "sweeps" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sweep.yaml").write_text((ROOT / "sweeps" / SWEEPS[name]).read_text())
        (folder / "extra_args.json").write_text(json.dumps(extra))
        jobs += sweep_jobs(config, folder, extra, "sweep", TINY_GRID_POINTS if scale == "tiny" else 0)
    print(f"homework: {len(jobs)} sweep runs ({', '.join(configs)})", flush=True)
    runner.run(jobs)
    for name, config in configs.items():
        write_table(collect_local(out / "sweeps" / name)[1], out / "sweeps" / name, config)

    # 2. The final runs of the best configurations, and the upper bound, over the seeds. Rows that
    # choose the same grid point share its final run.
    finals, folders, chosen_by = [], {}, {}
    for name, sweep, rule in rows:
        config, sweep_rows = collect_local(out / "sweeps" / sweep)
        if rule != RULES.get(name):
            config, sweep_rows = rescored(config, sweep_rows, rule)
        chosen = best_run(config, sweep_rows)
        chosen_by[name] = criterion(rule).label
        if (sweep, chosen["key"]) in folders:
            folders[name] = folders[sweep, chosen["key"]]
            continue
        folders[name] = folders[sweep, chosen["key"]] = out / "final" / name
        command = final_command(with_paths(config), chosen, TARGET, final_seeds, name, str(out / "final" / name))
        command = [part for part in command if not part.startswith("--output_dir=")]  # the runner adds it
        finals.append(Job(command, out / "final" / name, "target_acc",
                          {"from": f"{sweep}: {chosen['key']}", "selection": chosen_by[name]}))
    upper = ["accelerate", "launch", "--quiet", "--config_file", str(ROOT / "accelerate_config.yaml"),
             str(ROOT / "train_baseline.py"), "--source=photo", f"--target={TARGET}", "--train_on=target",
             "--recipe=homework", f"--seeds={final_seeds}", "--wandb_group=upper", "--run_name=upper",
             *(["--report_to=wandb"] if wandb_mode != "off" else []), *extra]
    finals.append(Job(upper, out / "final" / "upper", "target_acc", {"from": "the homework code's settings"}))
    folders["upper"] = out / "final" / "upper"
    print(f"homework: {len(finals)} final runs over seeds {final_seeds}", flush=True)
    runner.run(finals)

    # 3. The table.
    table = homework_report.build_table({name: str(folders[name]) for name, _, _ in [*rows, ("upper", "", "")]}, chosen_by)
    (out / "report.md").write_text(homework_report.to_markdown(table))
    (out / "report.csv").write_text(homework_report.to_csv(table))
    if wandb_mode != "off":
        homework_report.log_wandb_table(table, "dann-pacs", name="homework-report", mode=wandb_mode)
    print(homework_report.to_markdown(table) + f"\n-> {out / 'report.md'}, {out / 'report.csv'}", flush=True)
    failed = failures(jobs + finals)
    if failed:
        raise UserError(f"{failed}; fix them and run the same command again (finished runs are skipped)")
    return table

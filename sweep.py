"""Run the sweeps in sweeps/ without a W&B server, choose the best configuration, report;
or the whole first homework in one command.

    python sweep.py homework --out runs/homework          # grids, best configs, finals, table
    python sweep.py table --dataset digits --pairs mnist_m:svhn,svhn:mnist_m \
        --methods baseline,dann,dsn,upper --backbones resnet18,lenet --out runs/hw2   # the second homework
    python sweep.py run sweeps/4C_dann_xdomain.yaml --out runs/sweeps/4C      # one grid, resumable
    python sweep.py run sweeps/4C_dann_xdomain.yaml --out runs/sweeps/4C --gpus 0,1,2,3 --runs_per_gpu 4
    python sweep.py best runs/sweeps/4C --name 4D            # or: best ENTITY/PROJECT/SWEEP_ID
    python sweep.py best runs/sweeps/3B --selection snd      # chosen without target labels (any rule)
    python sweep.py selection runs/sweeps/3B                 # every rule against the oracle on this grid
    python sweep.py report 3A=runs/final/3A 3B=runs/final/3B 4B=runs/final/4B 4D=runs/final/4D \\
        upper=runs/final/upper --out runs/report.md

Arguments after `--` in `run`, `homework` and `table` go to every training run (e.g. -- --data_root
/data/PACS); they are part of each run's identity, and `best` keeps them in the final command.
"""
import argparse
import os
import shlex
import sys

from dann import plugins, report, sweeps
from dann.errors import UserError

GPU_RUNS = 4  # --runs_per_gpu default with GPUs: an estimate until benchmarks/bench_dann.py measures it
SELECTION_HELP = ("oracle (target accuracy), xdomain (cross-domain mean), or a rule run without target labels: "
                  + ", ".join(f"{n} ({'lower' if r.goal == 'minimize' else 'higher'} is better)"
                              for n, r in plugins.SELECTION.items()))


def visible_gpus() -> list[str]:
    """The GPU ids this process may use (CUDA_VISIBLE_DEVICES, else every device)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def add_runner_flags(parser: argparse.ArgumentParser, gpus_default: str) -> None:
    parser.add_argument("--gpus", default=gpus_default,
                        help="comma-separated GPU ids; 'all': every visible GPU; '': the CPU (or one default GPU)")
    parser.add_argument("--runs_per_gpu", type=int, default=0,
                        help=f"concurrent runs on each GPU (0: {GPU_RUNS} with GPUs, 1 on the CPU)")
    parser.add_argument("--wandb", default="offline", choices=("online", "offline", "off"),
                        help="W&B mode of the runs ('off': --report_to=none)")


def runner_settings(args) -> tuple[list[str] | None, int]:
    gpus = visible_gpus() if args.gpus == "all" else [g for g in args.gpus.split(",") if g]
    if args.runs_per_gpu < 0:
        raise UserError(f"--runs_per_gpu must be >= 1 (or 0: automatic), got {args.runs_per_gpu}")
    return gpus or None, args.runs_per_gpu or (GPU_RUNS if gpus else 1)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    hw = sub.add_parser("homework", help="the whole first homework: four grids, best configs, finals, table")
    hw.add_argument("--out", default="runs/homework", help="the homework's folder (sweeps/, final/, report.md)")
    hw.add_argument("--final_seeds", default="", help="seeds of the final runs (default 0,1,2,3,4; tiny: 0,1)")
    hw.add_argument("--scale", default="full", choices=("full", "tiny"),
                    help="'tiny': 2 points per grid, 2 steps at batch 8 on the CPU (a check of the pipeline)")
    hw.add_argument("--selection", default="", help="rules, comma-separated, that also choose the baseline's and "
                                                     "DANN's configuration on the 3A/3B grids without target labels "
                                                     "(rows 3A-NAME, 3B-NAME): " + ", ".join(plugins.SELECTION))
    add_runner_flags(hw, "all")
    tab = sub.add_parser("table", help="methods x domain pairs x backbones over seeds: the comparison table")
    tab.add_argument("--out", required=True, help="the table's folder (runs/, table.md, table.csv, paired.md)")
    tab.add_argument("--recipes", default="",
                     help="a YAML of rows (method and flags) and the table's defaults, e.g. sweeps/digits_table.yaml")
    tab.add_argument("--dataset", default="", help="any --dataset of the training scripts (default: the "
                                                    "recipes', else digits)")
    tab.add_argument("--pairs", default="", help="source:target pairs, comma-separated, e.g. mnist_m:svhn "
                                                 "(default: the recipes')")
    tab.add_argument("--methods", default="",
                     help="rows without --recipes: baseline (trained on source), any method of train_dann.py, "
                          "upper (trained on target); default baseline,dann,dsn,upper")
    tab.add_argument("--backbones", default="", help="comma-separated backbones (default: the recipes', else lenet)")
    tab.add_argument("--seeds", default="", help="seeds of every cell, mean ± std (default: the recipes', "
                                                 "else 0,1,2,3,4)")
    tab.add_argument("--selection", default="", help="how a recipe row with a grid (a YAML list of values) is "
                                                      "chosen in each cell: " + SELECTION_HELP)
    add_runner_flags(tab, "all")
    run = sub.add_parser("run", help="run a sweep YAML's grid locally; finished runs are skipped")
    run.add_argument("sweep", help="a W&B sweep YAML, e.g. sweeps/4C_dann_xdomain.yaml")
    run.add_argument("--out", required=True, help="the local sweep folder (runs, table.md)")
    add_runner_flags(run, "")
    run.add_argument("--launcher", default="sweep", choices=("sweep", "python"),
                     help="'sweep': the YAML's command (accelerate launch); 'python': python PROGRAM")
    run.add_argument("--max_runs", type=int, default=0, help="start at most this many runs (0: all)")
    best = sub.add_parser("best", help="best configuration of a sweep and the final run's command")
    best.add_argument("sweep", help="a local sweep folder or a W&B sweep path entity/project/sweep_id")
    best.add_argument("--target", default="art_painting", help="target domain of the final run")
    best.add_argument("--seeds", default="0,1,2,3,4", help="seeds of the final run")
    best.add_argument("--name", default="", help="experiment name (e.g. 4B): W&B group and runs/final/NAME")
    best.add_argument("--selection", default="", help=SELECTION_HELP + " (default: the sweep's metric)")
    sel = sub.add_parser("selection", help="every selection rule against the oracle on finished grids: "
                                           "its pick's target accuracy, regret, Spearman rank correlation")
    sel.add_argument("folders", nargs="+", metavar="RUN_FOLDER", help="local sweep folders (sweep.py run --out)")
    sel.add_argument("--out", default="", help="where selection.md/.csv and the scatter plots go "
                                               "(default: RUN_FOLDER/selection for one folder)")
    sel.add_argument("--wandb_project", default="", help="also log the table and plots to W&B in this project")
    sel.add_argument("--wandb_entity", default="")
    rep = sub.add_parser("report", help="the comparison table from recorded runs")
    rep.add_argument("rows", nargs="+", metavar="NAME=SOURCE",
                     help="e.g. 4D=runs/final/4D; SOURCE: run folder, results.json, sweep folder, wandb:PATH")
    rep.add_argument("--out", default="", help="also write the Markdown table here")
    rep.add_argument("--wandb_project", default="", help="also log the table to W&B in this project")
    rep.add_argument("--wandb_entity", default="")
    return parser


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = get_args_parser().parse_args(argv[:split]), argv[split + 1:]
    if args.command == "homework":
        from dann.homework import run_homework

        gpus, per_gpu = runner_settings(args)
        seeds = args.final_seeds or ("0,1" if args.scale == "tiny" else "0,1,2,3,4")
        run_homework(args.out, gpus=gpus, runs_per_gpu=per_gpu, final_seeds=seeds, scale=args.scale,
                     wandb_mode=args.wandb, extra=extra, selection=[n for n in args.selection.split(",") if n])
    elif args.command == "table":
        from dann.compare import load_recipes, rows_from_methods, run_table

        gpus, per_gpu = runner_settings(args)
        spec = load_recipes(args.recipes) if args.recipes else {}
        if args.methods or not spec:
            rows = rows_from_methods((args.methods or "baseline,dann,dsn,upper").split(","))
        else:
            rows = spec["rows"]
        pairs_text = args.pairs or ",".join(spec.get("pairs", []))
        pairs = [tuple(p.split(":")) for p in pairs_text.split(",") if p]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise UserError(f"--pairs {pairs_text!r}: give source:target pairs, e.g. mnist_m:svhn,svhn:mnist_m")
        backbones = args.backbones or ",".join(spec.get("backbones", [])) or "lenet"
        run_table(args.out, dataset=args.dataset or spec.get("dataset", "digits"), pairs=pairs, rows=rows,
                  backbones=backbones.split(","), seeds=args.seeds or str(spec.get("seeds", "0,1,2,3,4")),
                  gpus=gpus, runs_per_gpu=per_gpu, wandb_mode=args.wandb, common=spec.get("common"), extra=extra,
                  selection=args.selection)
    elif args.command == "run":
        gpus, per_gpu = runner_settings(args)
        rows = sweeps.run_local(args.sweep, args.out, extra, args.launcher, gpus, args.wandb, args.max_runs, per_gpu)
        count = {s: sum(r["status"] == s for r in rows) for s in ("finished", "failed", "pending")}
        print(f"{count['finished']} of {len(rows)} runs finished, {count['failed']} failed, "
              f"{count['pending']} left -> {args.out}/table.md")
    elif args.command == "best":
        config, rows = sweeps.collect(args.sweep)
        by = ""
        if args.selection:
            from dann.model_selection import criterion, rescored

            config, rows = rescored(config, rows, args.selection)
            by = f" by {criterion(args.selection).label}"
        chosen = sweeps.best_run(config, rows)
        print(f"best of {sum(r['metric'] is not None for r in rows)} finished runs{by}: "
              f"{config['metric']['name']}={chosen['metric']:.4f} ({chosen['key']})")
        for k, v in chosen["params"].items():
            print(f"  {k}: {v}")
        if chosen.get("extra"):
            print(f"  (and, after --: {shlex.join(chosen['extra'])})")
        command = sweeps.final_command(config, chosen, args.target, args.seeds, args.name)
        print("final run:\n  " + shlex.join(command))
    elif args.command == "selection":
        from dann.model_selection import analyse

        if not args.out and len(args.folders) > 1:
            raise UserError("sweep.py selection with several RUN_FOLDERs needs --out: where the table goes")
        out = args.out or os.path.join(args.folders[0], "selection")
        print(analyse(args.folders, out, args.wandb_project, args.wandb_entity) + f"-> {out}/selection.md", end="\n")
    else:
        sources = dict(row.split("=", 1) if "=" in row else (row, row) for row in args.rows)
        table = report.build_table(sources)
        markdown = report.to_markdown(table)
        print(markdown, end="")
        if args.out:
            with open(args.out, "w") as f:
                f.write(markdown)
        if args.wandb_project:
            print(f"W&B table: {report.log_wandb_table(table, args.wandb_project, args.wandb_entity)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:  # SIGTERM / SIGINT: the runner stopped its runs
        print(f"stopped: {e}" if str(e) else "stopped", file=sys.stderr)
        sys.exit(130)

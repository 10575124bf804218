"""Run the sweeps in sweeps/ without a W&B server, choose the best configuration, report.

    python sweep.py run sweeps/4C_dann_xdomain.yaml --out runs/sweeps/4C      # the grid, resumable
    python sweep.py run sweeps/4C_dann_xdomain.yaml --out runs/sweeps/4C --gpus 0,1,2,3
    python sweep.py best runs/sweeps/4C --name 4D            # or: best ENTITY/PROJECT/SWEEP_ID
    python sweep.py report 3A=runs/final/3A 3B=runs/final/3B 4B=runs/final/4B 4D=runs/final/4D \\
        upper=runs/final/upper --out runs/report.md

Arguments after `--` in `run` go to every training run (e.g. -- --cpu --max_steps 5).
"""
import argparse
import shlex
import sys

from dann import report, sweeps
from dann.errors import UserError


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a sweep YAML's grid locally; finished runs are skipped")
    run.add_argument("sweep", help="a W&B sweep YAML, e.g. sweeps/4C_dann_xdomain.yaml")
    run.add_argument("--out", required=True, help="the local sweep folder (runs, table.md)")
    run.add_argument("--gpus", default="", help="comma-separated GPU ids: one run per GPU in parallel")
    run.add_argument("--wandb", default="offline", choices=("online", "offline", "off"),
                     help="W&B mode of the runs ('off': --report_to=none)")
    run.add_argument("--launcher", default="sweep", choices=("sweep", "python"),
                     help="'sweep': the YAML's command (accelerate launch); 'python': python PROGRAM")
    run.add_argument("--max_runs", type=int, default=0, help="start at most this many runs (0: all)")
    best = sub.add_parser("best", help="best configuration of a sweep and the final run's command")
    best.add_argument("sweep", help="a local sweep folder or a W&B sweep path entity/project/sweep_id")
    best.add_argument("--target", default="art_painting", help="target domain of the final run")
    best.add_argument("--seeds", default="0,1,2", help="seeds of the final run")
    best.add_argument("--name", default="", help="experiment name (e.g. 4B): W&B group and runs/final/NAME")
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
    if args.command == "run":
        rows = sweeps.run_local(args.sweep, args.out, extra, args.launcher,
                                [g for g in args.gpus.split(",") if g] or None, args.wandb, args.max_runs)
        count = {s: sum(r["status"] == s for r in rows) for s in ("finished", "failed", "pending")}
        print(f"{count['finished']} of {len(rows)} runs finished, {count['failed']} failed, "
              f"{count['pending']} left -> {args.out}/table.md")
    elif args.command == "best":
        config, rows = sweeps.collect(args.sweep)
        chosen = sweeps.best_run(config, rows)
        print(f"best of {sum(r['metric'] is not None for r in rows)} finished runs: "
              f"{config['metric']['name']}={chosen['metric']:.4f} ({chosen['key']})")
        for k, v in chosen["params"].items():
            print(f"  {k}: {v}")
        command = sweeps.final_command(config, chosen["params"], args.target, args.seeds, args.name)
        print("final run:\n  " + shlex.join(command))
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

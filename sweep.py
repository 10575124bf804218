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
`--launcher slurm` makes every run of `run`, `homework` and `table` a Slurm job (the --slurm_* flags);
`multinode` writes the sbatch script of one run on several nodes:

    python sweep.py homework --out runs/homework --launcher slurm --slurm_partition gpu --slurm_time 4:00:00
    python sweep.py multinode --nodes 2 --gpus_per_node 8 --run_dir runs/big -- train_dann.py --epochs 30
"""
import argparse
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from dann import plugins
from dann.experiments import grids, homework_report
from dann.config import HelpFormatter, OneLineParser
from dann.errors import UserError, one_line, route_warnings
from dann.experiments.local import Runner, error_line, slots_for

GPU_RUNS = 4  # --runs_per_gpu default with GPUs: an estimate until benchmarks/bench_dann.py measures it
SELECTION_HELP = ("oracle (target accuracy), xdomain (cross-domain mean), or a rule run without target labels: "
                  + ", ".join(f"{n} ({'lower' if r.goal == 'minimize' else 'higher'} is better)"
                              for n, r in plugins.SELECTION.items()))


def visible_gpus() -> list[str]:
    """The GPU ids this process may use (CUDA_VISIBLE_DEVICES, else every device)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip()]
    # Counted by a child process: torch (0.3 GB of this runner's memory for as long as the
    # sweep runs, beside every training it starts) is never imported here.
    count = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                           capture_output=True, text=True, check=True).stdout
    return [str(i) for i in range(int(count))]


def add_runner_flags(parser: argparse.ArgumentParser, gpus_default: str) -> None:
    parser.add_argument("--launcher", default="local",
                        help="'local': runs on this machine's GPUs (or CPU); 'slurm': every run a Slurm job")
    parser.add_argument("--gpus", default=gpus_default,
                        help="local: GPU ids, comma-separated; 'all': every visible GPU; '': the CPU (or one GPU)")
    parser.add_argument("--runs_per_gpu", type=int, default=0,
                        help=f"local: concurrent runs on each GPU (0: {GPU_RUNS} with GPUs, 1 on the CPU)")
    parser.add_argument("--wandb", default="offline", choices=("online", "offline", "off"),
                        help="W&B mode of the runs ('off': --report_to=none)")
    add_slurm_flags(parser, jobs=True)


def add_slurm_flags(parser: argparse.ArgumentParser, jobs: bool) -> None:
    slurm = parser.add_argument_group("Slurm (--launcher slurm)" if jobs else "Slurm")
    slurm.add_argument("--slurm_partition", default="", help="partition (default: the cluster's)")
    slurm.add_argument("--slurm_time", default="240", help="time limit of a job: minutes or [D-]HH:MM:SS")
    slurm.add_argument("--slurm_cpus_per_job", type=int, default=4, help="CPUs of a job (of each node: multinode)")
    slurm.add_argument("--slurm_mem", default="", help="memory of a job as sbatch's --mem, e.g. 32G")
    slurm.add_argument("--slurm_sbatch", action="append", default=[], metavar="OPTION[=VALUE]",
                       help="any other sbatch option, repeatable: --slurm_sbatch account=lab --slurm_sbatch exclusive")
    if jobs:
        slurm.add_argument("--slurm_gpus_per_job", type=int, default=1, help="GPUs of a job: one process each")
        slurm.add_argument("--slurm_array_parallelism", type=int, default=256, help="jobs of an array run at once")
        slurm.add_argument("--slurm_poll", type=float, default=30, help="seconds between squeue calls while waiting")


def slurm_settings(args):
    """The --slurm_* flags, checked (multinode has no per-job GPU, array or poll flags)."""
    from dann.experiments.slurm import SlurmSettings, check_mem, parse_time, sbatch_options

    settings = SlurmSettings(partition=args.slurm_partition, time_min=parse_time(args.slurm_time),
                             cpus_per_job=args.slurm_cpus_per_job, mem=check_mem(args.slurm_mem),
                             sbatch=sbatch_options(args.slurm_sbatch))
    if hasattr(args, "slurm_gpus_per_job"):
        settings.gpus_per_job, settings.array_parallelism = args.slurm_gpus_per_job, args.slurm_array_parallelism
        settings.poll_s = args.slurm_poll
    least = {"--slurm_cpus_per_job": (settings.cpus_per_job, 1), "--slurm_gpus_per_job": (settings.gpus_per_job, 0),
             "--slurm_array_parallelism": (settings.array_parallelism, 1), "--slurm_poll": (settings.poll_s, 0.1)}
    for flag, (value, low) in least.items():
        if value < low:
            raise UserError(f"{flag} must be >= {low}, got {value}")
    return settings


def runner_settings(args) -> tuple[list[str] | None, int]:
    gpus = visible_gpus() if args.gpus == "all" else [g for g in args.gpus.split(",") if g]
    if args.runs_per_gpu < 0:
        raise UserError(f"--runs_per_gpu must be >= 1 (or 0: automatic), got {args.runs_per_gpu}")
    return gpus or None, args.runs_per_gpu or (GPU_RUNS if gpus else 1)


def make_runner(args, out: str):
    """The local runner (K runs per GPU) or the Slurm one (a job per run; submitit's files in OUT/slurm)."""
    if args.command == "run" and args.launcher in ("sweep", "python"):  # its meaning before local|slurm
        raise UserError(f"--launcher {args.launcher} is now --command_style {args.launcher}; "
                        f"--launcher says where runs go: local or slurm")
    if args.launcher == "local":
        return Runner(slots_for(*runner_settings(args)), args.wandb)
    if args.launcher == "slurm":
        from dann.experiments.slurm import SlurmRunner

        return SlurmRunner(Path(out) / "slurm", slurm_settings(args), args.wandb, name=f"dann-{Path(out).name}")
    raise UserError(f"--launcher {args.launcher!r}: choose local or slurm")


PASS_THROUGH = ("Arguments after `--` go to every training run (e.g. -- --data_root /data/PACS); they are "
                "part of each run's identity.")


def number_or_text(text: str):
    """A flag value as a sweep YAML holds it: an int, a float, or the text itself ('on' stays 'on')."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sweep.py", description=" ".join(__doc__.split("\n\n")[0].split()),
                           formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = dict(formatter_class=HelpFormatter)
    hw = sub.add_parser("homework", help="the whole first homework: four grids, best configs, finals, table",
                        epilog=PASS_THROUGH, **common)
    hw.add_argument("--out", default="runs/homework", help="the homework's folder (sweeps/, final/, report.md)")
    hw.add_argument("--final_seeds", default="", help="seeds of the final runs (default 0,1,2,3,4; tiny: 0,1)")
    hw.add_argument("--scale", default="full", choices=("full", "tiny"),
                    help="'tiny': 2 points per grid, 2 steps at batch 8 on the CPU (a check of the pipeline)")
    hw.add_argument("--selection", default="", help="rules, comma-separated, that also choose the baseline's and "
                                                     "DANN's configuration on the 3A/3B grids without target labels "
                                                     "(rows 3A-NAME, 3B-NAME): " + ", ".join(plugins.SELECTION))
    add_runner_flags(hw, "all")
    tab = sub.add_parser("table", help="methods x domain pairs x backbones over seeds: the comparison table",
                         epilog=PASS_THROUGH, **common)
    tab.add_argument("--out", required=True, help="the table's folder (runs/, table.md, table.csv, paired.md)")
    tab.add_argument("--recipes", default="",
                     help="a YAML of rows (method and flags) and the table's defaults, e.g. sweeps/tables/digits.yaml")
    tab.add_argument("--dataset", default="", help="any --dataset of the training scripts (default: the "
                                                    "recipes', else digits)")
    tab.add_argument("--pairs", default="", help="source:target pairs, comma-separated, e.g. mnist_m:svhn "
                                                 "(default: the recipes')")
    tab.add_argument("--methods", default="",
                     help="rows without --recipes: baseline (trained on source), any method of train_dann.py, "
                          "upper (trained on target); default baseline,dann,dsn,upper")
    tab.add_argument("--row", action="append", default=[],
                     help="only this row of --recipes, by its name (repeatable): train part of a table; table.md "
                          "then shows those rows, and the others' finished cells stay where they are")
    tab.add_argument("--backbones", default="", help="comma-separated backbones (default: the recipes', else lenet)")
    tab.add_argument("--seeds", default="", help="seeds of every cell, mean ± std (default: the recipes', "
                                                 "else 0,1,2,3,4)")
    tab.add_argument("--selection", default="", help="how a recipe row with a grid (a YAML list of values) is "
                                                      "chosen in each cell: " + SELECTION_HELP)
    add_runner_flags(tab, "all")
    choose = sub.add_parser("choose", help="each method's recipe from a finished tuning table: the best mean over its "
                                           "pairs and seeds, with the leave-one-pair-out picks", **common)
    choose.add_argument("folder", help="a `sweep.py table` folder, e.g. runs/digits_tuning")
    run = sub.add_parser("run", help="run a sweep YAML's grid locally; finished runs are skipped",
                         epilog=PASS_THROUGH, **common)
    run.add_argument("sweep", help="a W&B sweep YAML, e.g. sweeps/4C_dann_xdomain.yaml")
    run.add_argument("--out", required=True, help="the local sweep folder (runs, table.md)")
    add_runner_flags(run, "")
    run.add_argument("--command_style", default="sweep", choices=("sweep", "python"),
                     help="'sweep': the YAML's command (accelerate launch); 'python': python PROGRAM")
    run.add_argument("--max_runs", type=int, default=0, help="start at most this many runs (0: all)")
    best = sub.add_parser("best", help="best configuration of a sweep and the final run's command", **common)
    best.add_argument("sweep", help="a local sweep folder or a W&B sweep path entity/project/sweep_id")
    best.add_argument("--target", default="art_painting", help="target domain of the final run")
    best.add_argument("--seeds", default="0,1,2,3,4", help="seeds of the final run")
    best.add_argument("--name", default="", help="experiment name (e.g. 4B): W&B group and runs/final/NAME")
    best.add_argument("--selection", default="", help=SELECTION_HELP + " (default: the sweep's metric)")
    sel = sub.add_parser("selection", help="every selection rule against the oracle on finished grids: "
                                           "its pick's target accuracy, regret, Spearman rank correlation", **common)
    sel.add_argument("folders", nargs="+", metavar="RUN_FOLDER", help="local sweep folders (sweep.py run --out)")
    sel.add_argument("--out", default="", help="where selection.md/.csv and the scatter plots go "
                                               "(default: RUN_FOLDER/selection for one folder)")
    sel.add_argument("--wandb_project", default="", help="also log the table and plots to W&B in this project")
    sel.add_argument("--wandb_entity", default="")
    gen = sub.add_parser("grid", help="a grid sweep YAML from a method's declared sweep values (dann/plugins.py)",
                         epilog="Arguments after `--` (--flag=value) are the grid's fixed values.", **common)
    gen.add_argument("--method", required=True, help="the method whose hyperparameters are swept")
    gen.add_argument("--vary", default="", help="comma-separated hyperparameters to vary (default: every one "
                                                "with sweep values)")
    gen.add_argument("--also", action="append", default=[], metavar="FLAG=V1,V2",
                     help="another flag's values, repeatable, e.g. --also lr=0.003,0.01")
    gen.add_argument("--out", required=True, help="the YAML file to write")
    multi = sub.add_parser("multinode", help="the sbatch script of one training run on several nodes", **common)
    multi.add_argument("--nodes", type=int, required=True, help="nodes of the run")
    multi.add_argument("--gpus_per_node", type=int, default=8, help="GPUs of each node: one process each")
    multi.add_argument("--run_dir", required=True, help="the run's folder (--output_dir; resumed from there)")
    multi.add_argument("--out", default="", help="the script's file (default: RUN_DIR.sbatch)")
    add_slurm_flags(multi, jobs=False)
    rep = sub.add_parser("report", help="the comparison table from recorded runs", **common)
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
        from dann.experiments.homework import run_homework

        seeds = args.final_seeds or ("0,1" if args.scale == "tiny" else "0,1,2,3,4")
        run_homework(args.out, runner=make_runner(args, args.out), final_seeds=seeds, scale=args.scale,
                     wandb_mode=args.wandb, extra=extra, selection=[n for n in args.selection.split(",") if n])
    elif args.command == "table":
        from dann.experiments.tables import load_recipes, pick_rows, rows_from_methods, run_table

        spec = load_recipes(args.recipes) if args.recipes else {}
        if args.methods or not spec:
            rows = rows_from_methods((args.methods or "baseline,dann,dsn,upper").split(","))
        else:
            rows = spec["rows"]
        if args.row:
            if not spec:
                raise UserError("--row picks rows of --recipes: give --recipes too")
            rows = pick_rows(rows, args.row, args.recipes)
        pairs_text = args.pairs or ",".join(spec.get("pairs", []))
        pairs = [tuple(p.split(":")) for p in pairs_text.split(",") if p]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise UserError(f"--pairs {pairs_text!r}: give source:target pairs, e.g. mnist_m:svhn,svhn:mnist_m")
        backbones = args.backbones or ",".join(spec.get("backbones", [])) or "lenet"
        run_table(args.out, dataset=args.dataset or spec.get("dataset", "digits"), pairs=pairs, rows=rows,
                  backbones=backbones.split(","), seeds=args.seeds or str(spec.get("seeds", "0,1,2,3,4")),
                  runner=make_runner(args, args.out), wandb_mode=args.wandb, common=spec.get("common"), extra=extra,
                  selection=args.selection)
    elif args.command == "choose":
        from dann.experiments.tables import choose_recipes

        print(choose_recipes(args.folder), end="")
    elif args.command == "run":
        rows = grids.run_sweep(args.sweep, args.out, extra, args.command_style, make_runner(args, args.out),
                                args.wandb, args.max_runs)
        count = {s: sum(r["status"] == s for r in rows) for s in ("finished", "failed", "pending")}
        print(f"{count['finished']} of {len(rows)} runs finished, {count['failed']} failed, "
              f"{count['pending']} left -> {args.out}/table.md")
        failed = [f"{r['key']} ({error_line(r['error']) or 'no message'})" for r in rows if r["status"] == "failed"]
        if failed:
            more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
            raise UserError(f"{len(failed)} of {len(rows)} runs failed: {'; '.join(failed[:3])}{more}; fix them and "
                            f"run the same command again (finished runs are skipped)")
    elif args.command == "grid":
        import yaml

        also = {}
        for item in args.also:
            flag, _, values = item.partition("=")
            if not values:
                raise UserError(f"--also {item!r}: give FLAG=V1,V2, e.g. --also lr=0.003,0.01")
            also[flag] = [number_or_text(v) for v in values.split(",")]
        fixed = {}
        for item in extra:
            flag, _, value = item.removeprefix("--").partition("=")
            fixed[flag] = number_or_text(value) if value else True
        config = grids.sweep_from_hparams(args.method, [v for v in args.vary.split(",") if v], fixed, also)
        for params in grids.grid(config):  # every point a command line the method accepts
            from dann.config import parse_config

            parse_config("baseline" if config["program"] == "train_baseline.py" else "dann", grids.flag_args(params))
        Path(args.out).write_text(yaml.safe_dump(config, sort_keys=False))
        print(f"{len(grids.grid(config))} points -> {args.out}")
    elif args.command == "multinode":
        write_multinode(args, extra)
    elif args.command == "best":
        config, rows = grids.collect(args.sweep)
        by = ""
        if args.selection:
            from dann.experiments.choosing import criterion, rescored

            config, rows = rescored(config, rows, args.selection)
            by = f" by {criterion(args.selection).label}"
        chosen = grids.best_run(config, rows)
        print(f"best of {sum(r['metric'] is not None for r in rows)} finished runs{by}: "
              f"{config['metric']['name']}={chosen['metric']:.4f} ({chosen['key']})")
        for k, v in chosen["params"].items():
            print(f"  {k}: {v}")
        if chosen.get("extra"):
            print(f"  (and, after --: {shlex.join(chosen['extra'])})")
        command = grids.final_command(config, chosen, args.target, args.seeds, args.name)
        print("final run:\n  " + shlex.join(command))
    elif args.command == "selection":
        from dann.experiments.choosing import analyse

        if not args.out and len(args.folders) > 1:
            raise UserError("sweep.py selection with several RUN_FOLDERs needs --out: where the table goes")
        out = args.out or os.path.join(args.folders[0], "selection")
        print(analyse(args.folders, out, args.wandb_project, args.wandb_entity) + f"-> {out}/selection.md", end="\n")
    else:
        sources = dict(row.split("=", 1) if "=" in row else (row, row) for row in args.rows)
        table = homework_report.build_table(sources)
        markdown = homework_report.to_markdown(table)
        print(markdown, end="")
        if args.out:
            with open(args.out, "w") as f:
                f.write(markdown)
        if args.wandb_project:
            print(f"W&B table: {homework_report.log_wandb_table(table, args.wandb_project, args.wandb_entity)}")
    return 0


def write_multinode(args, train: list[str]) -> None:
    from dann.experiments.multinode import multinode_script

    if not train or not Path(train[0]).is_file():
        raise UserError("give the training program and its flags after --, e.g. -- train_dann.py --epochs 30")
    if args.nodes < 1 or args.gpus_per_node < 1:
        raise UserError(f"--nodes and --gpus_per_node must be >= 1 (got {args.nodes}, {args.gpus_per_node})")
    out = Path(args.out or f"{args.run_dir.rstrip('/')}.sbatch")
    text = multinode_script(args.nodes, args.gpus_per_node, args.run_dir, train, slurm_settings(args), str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    Path(args.run_dir).mkdir(parents=True, exist_ok=True)  # sbatch writes the job's log there
    print(f"wrote {out}: {args.nodes} nodes x {args.gpus_per_node} GPUs; submit it with: sbatch {out}")


if __name__ == "__main__":
    route_warnings()
    try:
        sys.exit(main(sys.argv[1:]))
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:  # SIGTERM / SIGINT: the runner stopped its runs (Stopped: 128 + the signal)
        print(f"stopped: {e}" if str(e) else "stopped: SIGINT", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 128 + signal.SIGINT))

"""Sweeps: every YAML in sweeps/ is a valid grid sweep whose parameters are flags the program
accepts; the local runner skips finished runs when restarted and records failures; the best
configuration and the final command; the report table from recorded runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from train_helpers import ROOT, clean_env

from dann.experiments import grids, homework_report
from dann.config import get_args_parser, parse_config

YAMLS = sorted((ROOT / "sweeps").glob("*.yaml"))


def test_there_is_a_sweep_per_experiment():
    assert [p.name[:2] for p in YAMLS] == ["3A", "3B", "4A", "4C"]


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_sweep_yaml_is_valid_and_its_parameters_are_flags(path):
    config = grids.load_sweep(path)
    assert grids.check_sweep(config) == []
    assert config["command"][:6] == ["accelerate", "launch", "--quiet", "--config_file", "accelerate_config.yaml",
                                     "${program}"]
    assert config["project"] == "dann-pacs" and config["parameters"]["batch_scope"] == {"value": "global"}
    method = grids.METHOD_OF_PROGRAM[config["program"]]
    flags = {a.dest for a in get_args_parser(method)._actions}
    assert set(config["parameters"]) <= flags, set(config["parameters"]) - flags
    points = grids.grid(config)
    assert 10 <= len(points) <= 100
    for params in points:  # as `wandb agent` passes them: --name=value
        parse_config(method, grids.flag_args(params))
    xdomain = config["metric"]["name"] == "xdomain/target_acc_mean"
    assert xdomain == ("," in config["parameters"]["target"]["value"])
    text = path.read_text()  # each grid has a comment line saying why
    for name, spec in config["parameters"].items():
        if "values" in spec:
            before = text.split(f"  {name}:")[0].rstrip().splitlines()[-1]
            assert before.strip().startswith("#"), f"{path.name}: no comment above {name}"


def parsed_grid(path):
    """A grid YAML checked, and each of its points parsed as train_dann.py's command line."""
    config = grids.load_sweep(path)
    assert grids.check_sweep(config) == []
    return config, [parse_config("dann", grids.flag_args(params)) for params in grids.grid(config)]


TUNING = sorted((ROOT / "sweeps" / "digits_tune").glob("*.yaml"))


@pytest.mark.parametrize("path", TUNING, ids=lambda p: p.stem)
def test_tuning_grids_run_only_on_the_tuning_pair_and_parse(path):
    """The digits table's recipes are chosen on mnist_tune -> mnist_m_tune, never on a benchmark pair;
    every grid point is a command line its method accepts (its own flags, no other's)."""
    config, _ = parsed_grid(path)
    parameters = config["parameters"]
    assert (parameters["source"], parameters["target"]) == ({"value": "mnist_tune"}, {"value": "mnist_m_tune"})
    assert len(parameters["seeds"]["value"].split(",")) == 3


SELECTION = sorted((ROOT / "sweeps" / "selection").glob("*.yaml"))


@pytest.mark.parametrize("path", SELECTION, ids=lambda p: p.stem)
def test_selection_grids_parse_and_record_every_rule(path):
    """The grids of docs/RESULTS.md's selection table: every point a valid command line with a
    held-out source split and every rule; the measurement's grids have at least 12 points."""
    _, points = parsed_grid(path)
    assert len(points) >= (6 if "smoke" in path.stem else 12)
    assert all(parsed.source_val > 0 and parsed.select_rules == "all" for parsed in points)


W_AND_B_SWEEPS = sorted(p for p in (ROOT / "sweeps").rglob("*.yaml") if p.parent.name != "tables")


def agent_args(params: dict) -> list[str]:
    """A grid point's flags as `wandb agent` builds them for ${args} (W&B's own builder)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    return create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})["args"]


@pytest.mark.parametrize("path", W_AND_B_SWEEPS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_wandb_sweep_logs_to_wandb_under_an_agent_and_the_runner_may_turn_it_off(path):
    """Under `wandb agent` every run reports to W&B (else the sweep's metric never arrives); the
    local runner's `--wandb off` (its extra --report_to=none, after the grid's flags) still wins."""
    config = grids.load_sweep(path)
    method = grids.METHOD_OF_PROGRAM[config["program"]]
    for params in grids.grid(config):
        assert parse_config(method, agent_args(params)).report_to in ("wandb", "all"), params
    (params,) = grids.grid(config)[:1]
    assert parse_config(method, [*agent_args(params), "--report_to=none"]).report_to == "none"


def program_flags(command: list[str]) -> list[str]:
    return command[next(i for i, part in enumerate(command) if part.endswith(".py")) + 1:]


@pytest.mark.parametrize("path", W_AND_B_SWEEPS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_sweep_runs_save_no_weights_unless_the_sweep_asks(path, tmp_path):
    """An AlexNet grid run's weights are 446 MB (DANN) or 228 MB (baseline): the YAMLs that train
    AlexNets say save_model: false, and the runner adds it to every grid point that does not say."""
    config = grids.load_sweep(path)
    method = grids.METHOD_OF_PROGRAM[config["program"]]
    if config["parameters"].get("backbone", {}).get("value", "alexnet") == "alexnet":
        assert config["parameters"]["save_model"] == {"value": False}
    for job in grids.sweep_jobs(config, tmp_path, [], "sweep", max_points=2):
        assert parse_config(method, program_flags(job.command)).save_model is False
    # asked for, in the grid or after `--`: kept, and the run's identity does not depend on the default
    asked = {**config, "parameters": {**config["parameters"], "save_model": {"value": True}}}
    (job,) = grids.sweep_jobs(asked, tmp_path, [], "sweep", max_points=1)
    assert parse_config(method, program_flags(job.command)).save_model is True
    (job,) = grids.sweep_jobs(config, tmp_path, ["--save_model"], "sweep", max_points=1)
    assert parse_config(method, program_flags(job.command)).save_model is True
    (plain,) = grids.sweep_jobs(config, tmp_path, [], "sweep", max_points=1)
    assert plain.run_dir.name == grids.run_key(grids.grid(config)[0], [])


def test_check_sweep_finds_mistakes():
    bad = {"method": "bayes", "metric": {"name": "x"}, "program": "train.py",
           "parameters": {"lr": {"values": []}, "alpha": {"min": 0}}, "commands": []}
    errors = "; ".join(grids.check_sweep(bad))
    for part in ("unknown key 'commands'", "method must be 'grid'", "metric needs", "program must",
                 "lr: values must", "alpha: a grid needs"):
        assert part in errors


def test_an_unknown_parameter_is_not_a_flag():
    with pytest.raises(SystemExit):
        parse_config("baseline", ["--alpha=0.1"])  # DANN only


# ---------------------------------------------------------------------------- the local runner

FAKE_PROGRAM = '''
import json, os, sys, time
from pathlib import Path
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
Path(args["output_dir"]).mkdir(parents=True, exist_ok=True)
Path(args["output_dir"], "pid.txt").write_text(str(os.getpid()))
while args["lr"] == os.environ.get("FAKE_HOLD_LR") and not Path(args["output_dir"], "release").exists():
    time.sleep(0.05)  # a barrier: held until released (or killed with the runner)
if args["lr"] == "0.666":
    sys.exit("boom: lr 0.666 diverged")
Path(args["output_dir"]).mkdir(parents=True, exist_ok=True)
Path(args["output_dir"], "results.json").write_text(json.dumps({"target_acc": float(args["lr"]), "argv": sys.argv}))
'''


def fake_sweep(tmp_path: Path, lrs) -> Path:
    """A sweep over a stand-in train_baseline.py in tmp_path, which 'scores' target_acc = lr; the
    run whose lr is $FAKE_HOLD_LR holds after writing pid.txt until <its folder>/release exists."""
    (tmp_path / "train_baseline.py").write_text(FAKE_PROGRAM)
    config = {"program": "train_baseline.py", "method": "grid", "metric": {"name": "target_acc", "goal": "maximize"},
              "parameters": {"target": {"value": "art_painting"}, "seed": {"value": 0},
                             "lr": {"values": lrs}},
              "command": ["accelerate", "launch", "--quiet", "--config_file", str(ROOT / "accelerate_config.yaml"),
                          "${program}", "${args}"]}
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def sweep_cli(*args, cwd, env=None, **kwargs):
    return subprocess.run([sys.executable, str(ROOT / "sweep.py"), *args], cwd=cwd, capture_output=True,
                          text=True, env=env or clean_env(Path(cwd)), timeout=120, **kwargs)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has ended


@pytest.mark.slow
def test_runner_killed_and_restarted_runs_only_what_is_left(tmp_path):
    """Killed by its PID alone (SIGKILL: no handler runs), the runner takes its running
    training with it; started again, it runs only what is left."""
    path = fake_sweep(tmp_path, [0.1, 0.666, 0.3, 0.2])
    command = [sys.executable, str(ROOT / "sweep.py"), "run", str(path), "--out", "out",
               "--command_style", "python", "--wandb", "off"]
    runner = subprocess.Popen(command, cwd=tmp_path, env=clean_env(tmp_path, FAKE_HOLD_LR="0.666"),
                              start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    keys = [job.run_dir.name for job in grids.sweep_jobs(grids.load_sweep(path), tmp_path / "out",
                                                             ["--report_to=none"], "python")]
    first, second = (tmp_path / "out" / "runs" / key for key in keys[:2])
    deadline = time.time() + 60
    while not (first / "results.json").exists() or not (second / "pid.txt").exists():
        assert time.time() < deadline and runner.poll() is None
        time.sleep(0.05)
    runner.kill()  # the runner only, by its PID
    runner.wait()
    child = int((second / "pid.txt").read_text())
    deadline = time.time() + 60  # a bound for a broken runner, not a timing: the run dies with it
    while alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(child), "the run outlived the runner that started it"
    finished_at = (first / "results.json").stat().st_mtime_ns
    done = [p for p in (tmp_path / "out" / "runs").glob("*/results.json")]
    assert len(done) == 1, "killed before the end"

    proc = sweep_cli("run", str(path), "--out", "out", "--command_style", "python", "--wandb", "off", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # a run failed: not a success
    assert proc.stderr.strip().splitlines() == [f"error: 1 of 4 runs failed: {second.name} (boom: lr 0.666 "
                                                f"diverged); fix them and run the same command again (finished "
                                                f"runs are skipped)"]
    assert proc.stdout.count("skip ") == 1 and (first / "results.json").stat().st_mtime_ns == finished_at
    assert "3 of 4 runs finished, 1 failed, 0 left" in proc.stdout
    config, rows = grids.collect_local(tmp_path / "out")
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["params"]["lr"] for r in failed] == [0.666] and "boom: lr 0.666 diverged" in failed[0]["error"]
    assert {r["params"]["lr"]: r["metric"] for r in rows if r["status"] == "finished"} == {0.1: 0.1, 0.3: 0.3, 0.2: 0.2}
    argv = json.loads(Path(rows[2]["results"]).read_text())["argv"]
    assert "--report_to=none" in argv and "--lr=0.3" in argv  # an argument list, W&B's --name=value
    table = (tmp_path / "out" / "table.md").read_text()
    assert table.index("0.3000") < table.index("0.2000") < table.index("0.1000") < table.index("failed")

    again = sweep_cli("run", str(path), "--out", "out", "--command_style", "python", "--wandb", "off", cwd=tmp_path)
    assert again.stdout.count("skip ") == 3, "finished runs are skipped; the failed one is retried"


@pytest.mark.slow
def test_flags_after_the_separator_are_part_of_a_run_and_of_the_final_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = fake_sweep(tmp_path, [0.1, 0.2])
    grids.run_sweep(path, tmp_path / "out", ["--augment=true"], command_style="python", wandb_mode="off")
    rows = grids.run_sweep(path, tmp_path / "out", ["--augment=false"], command_style="python", wandb_mode="off")
    assert len(list((tmp_path / "out" / "runs").iterdir())) == 4  # two settings, two sets of runs
    assert all(r["extra"] == ["--augment=false", "--report_to=none"] for r in rows)
    proc = sweep_cli("best", "out", "--name", "4B", cwd=tmp_path)
    assert "--augment=false" in proc.stdout.split("final run:")[1] and "(and, after --:" in proc.stdout


@pytest.mark.slow
def test_the_sweep_launcher_needs_no_path_and_a_missing_one_makes_no_folder(tmp_path):
    path = fake_sweep(tmp_path, [0.5])
    env = clean_env(tmp_path, PATH="/nonexistent")  # no accelerate, no python on PATH
    proc = sweep_cli("run", str(path), "--out", "out", "--wandb", "off", cwd=tmp_path, env=env)
    assert proc.returncode == 0 and "1 of 1 runs finished" in proc.stdout, proc.stdout + proc.stderr
    assert "-m dann.experiments.launch --quiet" in proc.stdout

    config = yaml.safe_load(path.read_text())
    config["command"][0] = "no-such-launcher"
    path.write_text(yaml.safe_dump(config))
    proc = sweep_cli("run", str(path), "--out", "other", "--wandb", "off", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.startswith("error: the sweep's command starts with 'no-such-launcher'")
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_best_prints_the_config_and_the_final_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the runs start in the current folder: the stand-in program
    path = fake_sweep(tmp_path, [0.1, 0.3, 0.2])
    grids.run_sweep(path, tmp_path / "out", command_style="python", wandb_mode="off")
    proc = sweep_cli("best", "out", "--name", "4B", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "target_acc=0.3000" in proc.stdout and "lr: 0.3" in proc.stdout
    final = proc.stdout.split("final run:\n")[1].strip()
    assert final.startswith(f"accelerate launch --quiet --config_file {ROOT / 'accelerate_config.yaml'} train_baseline.py")
    assert "--lr=0.3" in final and "--target=art_painting" in final and "--seeds=0,1,2,3,4" in final
    assert "--seed=" not in final and "--wandb_group=4B" in final and "--output_dir=runs/final/4B" in final
    missing = sweep_cli("best", "nowhere", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.startswith("error: nowhere is neither")


@pytest.mark.slow
def test_runner_trains_a_tiny_grid_for_real(tiny_pacs, tmp_path):
    config = yaml.safe_load((ROOT / "sweeps" / "3A_baseline_photo_art.yaml").read_text())
    config["parameters"] = {"lr": {"values": [0.01, 0.001]}, "target": {"value": "art_painting"}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    run = ["run", str(path), "--out", str(tmp_path / "out"), "--command_style", "python", "--wandb", "off"]
    quick = ["--cpu", "--pretrained=none", "--max_steps=1", "--batch_size=4", "--num_workers=1"]  # a real AlexNet
    extra = ["--", *quick, "--no-tsne", f"--data_root={tiny_pacs}", f"--cache_dir={tmp_path / 'cache'}"]
    proc = sweep_cli(*run, "--max_runs", "1", *extra, cwd=ROOT, env=clean_env(tmp_path))  # interrupted
    assert proc.returncode == 0 and "1 of 2 runs finished" in proc.stdout, proc.stdout + proc.stderr
    proc = sweep_cli(*run, *extra, cwd=ROOT, env=clean_env(tmp_path))
    assert proc.returncode == 0 and "2 of 2 runs finished" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stdout.count("skip ") == 1


# ---------------------------------------------------------------------------- the report

def recorded(path: Path, method: str, target: str, accs: list[float], train_on: str = "source") -> Path:
    """A results.json as train_*.py writes it, for a run over len(accs) seeds."""
    from dann.tracking import summarize
    runs = [{"target": target, "seed": s, "target_acc": a, "best_target_acc": a, "source_acc": 0.99}
            for s, a in enumerate(accs)]
    path.mkdir(parents=True)
    results = {"method": method, "config": {"source": "photo", "target": target, "train_on": train_on},
               **summarize(runs), "runs": runs}
    (path / "results.json").write_text(json.dumps(results))
    return path


@pytest.mark.slow
def test_report_renders_the_comparison_table(tmp_path, monkeypatch):
    rows = {"3A": recorded(tmp_path / "3A", "baseline", "art_painting", [0.50, 0.52, 0.54]),
            "3B": recorded(tmp_path / "3B", "dann", "art_painting", [0.55]),
            "4B": recorded(tmp_path / "4B", "baseline", "art_painting", [0.48, 0.50]),
            "4D": recorded(tmp_path / "4D", "dann", "art_painting", [0.49, 0.53]) / "results.json",
            "upper": recorded(tmp_path / "up", "baseline", "art_painting", [0.95, 0.97], train_on="target")}
    monkeypatch.chdir(tmp_path)
    grids.run_sweep(fake_sweep(tmp_path, [0.1, 0.4]), tmp_path / "sweep", command_style="python", wandb_mode="off")
    rows["swept"] = tmp_path / "sweep"
    markdown = homework_report.to_markdown(homework_report.build_table({k: str(v) for k, v in rows.items()}))
    lines = markdown.splitlines()
    assert lines[0].startswith("| experiment | description | method")
    assert "| 3A | baseline, hyperparameters tuned on the target (test) domain | baseline | photo -> art_painting " \
           "| 52.00 ± 2.00 | 3 |" in markdown
    assert "| 3B |" in markdown and "| 55.00 | 1 |" in markdown  # one seed: no spread to show
    assert "| 4D | DANN, hyperparameters by cross-domain validation (cartoon, sketch) | dann |" in markdown
    assert "51.00 ± 2.83 | 2 |" in markdown
    assert "| upper | baseline trained on the labeled target domain (upper bound) | baseline (on target) " \
           "| art_painting -> art_painting |" in markdown
    assert "96.00 ± 1.41" in markdown
    assert "| swept |" in markdown and "| 40.00 | 1 |" in markdown and "(best run)" in markdown

    proc = sweep_cli("report", f"4B={rows['4B']}", "--out", "report.md", cwd=tmp_path)
    assert proc.returncode == 0 and "49.00 ± 1.41" in (tmp_path / "report.md").read_text()
    missing = sweep_cli("report", "4B=nothing", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.startswith("error: no results at nothing")


@pytest.mark.slow
def test_report_logs_a_wandb_table_offline(tmp_path):
    rows = {"3A": str(recorded(tmp_path / "3A", "baseline", "art_painting", [0.5, 0.6]))}
    env = clean_env(tmp_path, WANDB_MODE="offline", WANDB_DIR=str(tmp_path))
    proc = sweep_cli("report", f"3A={rows['3A']}", "--wandb_project", "dann-pacs", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    from train_helpers import inspect_wandb
    summary = inspect_wandb(next((tmp_path / "wandb").glob("offline-run-*")), env)["summary"]
    assert summary["comparison"]["_type"] == "table-file" and summary["comparison"]["nrows"] == 1


# ---------------------------------------------------------------------------- the layers

def imported_modules(path: Path) -> list[str]:
    """Every dann module a file imports, at its top or inside a function."""
    import ast

    tree = ast.parse(path.read_text())
    names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    names += [f"{node.module}.{alias.name}" if node.module in ("dann", "dann.experiments") else node.module
              for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
              for alias in node.names]
    return [n for n in names if n == "dann" or n.startswith("dann.")]


def test_the_training_library_never_imports_the_experiment_tier():
    """dann/experiments/ (grids, runners, tables, reports) sits on top of the library, as DomainBed
    keeps its scripts apart from algorithms.py: no library module imports it, even lazily."""
    library = [p for p in sorted((ROOT / "dann").rglob("*.py")) if "experiments" not in p.relative_to(ROOT).parts]
    assert len(library) > 20
    for path in library:
        assert not [n for n in imported_modules(path) if n.startswith("dann.experiments")], path
    # the check sees imports inside functions: the tier's own files do import each other
    assert "dann.experiments.local" in imported_modules(ROOT / "dann" / "experiments" / "grids.py")


def test_the_library_has_no_import_circle():
    """No library module imports one that imports it back, directly or through others, whether at
    the top of a file or inside a function (where a circle is usually hidden)."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (ROOT / "dann").rglob("*.py") if "experiments" not in p.parts}

    def imports(path):  # `from dann.x import y` is an edge to dann.x.y when that is a module, else to dann.x
        import ast

        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                          for alias in node.names}
        return {n for n in found if n in modules}

    graph = {name: imports(path) - {name} for name, path in modules.items()}
    assert "dann.outputs" in graph["dann.train"] and "dann.train" in graph["dann.selection"]  # the check sees edges

    def circle_from(start, seen=()):
        for nxt in sorted(graph[start]):
            if nxt in seen:
                return [*seen[seen.index(nxt):], nxt]
            found = circle_from(nxt, (*seen, nxt))
            if found:
                return found
        return None

    for name in sorted(graph):
        assert circle_from(name, (name,)) is None, " -> ".join(circle_from(name, (name,)))


def test_the_runner_counts_gpus_without_holding_torch():
    """The sweep runner lives as long as the sweep, beside every run it starts: torch (0.3 GB)
    is imported by a child that counts the GPUs and exits."""
    probe = "import sys, sweep; gpus = sweep.visible_gpus(); print(len(gpus), 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    import torch

    assert done.stdout.split() == [str(torch.cuda.device_count()), "False"], done.stderr[-2000:]


def test_grid_from_a_methods_declared_sweep_values(tmp_path):
    """`sweep.py grid`: the method's own sweep values (dann/hparams.py), other flags' values
    from --also, the fixed flags after --; every point parses as a command line."""
    out = tmp_path / "grid.yaml"
    done = subprocess.run([sys.executable, str(ROOT / "sweep.py"), "grid", "--method", "cdan", "--vary",
                           "alpha,entropy_conditioning", "--also", "lr=0.003,0.01", "--out", str(out), "--",
                           "--dataset=digits_shipped", "--channels_last=on", "--seeds=0,1,2"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    config = grids.load_sweep(out)
    assert len(grids.grid(config)) == 3 * 2 * 2 and config["program"] == "train_dann.py"
    parameters = config["parameters"]
    assert parameters["alpha"] == {"values": [0.1, 0.3, 1.0]} and parameters["lr"] == {"values": [0.003, 0.01]}
    assert parameters["channels_last"] == {"value": "on"} and parameters["seeds"] == {"value": "0,1,2"}
    for params in grids.grid(config):
        assert parse_config("dann", grids.flag_args(params)).method_hp.alpha == params["alpha"]
    refused = subprocess.run([sys.executable, str(ROOT / "sweep.py"), "grid", "--method", "mcc", "--vary", "alpha",
                              "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "declares no sweep values for it" in refused.stderr


def test_the_first_look_uses_the_tables_recipes():
    """--first_look's recipes (dann/first_look.py, read by the flag parser) are the digits table's:
    its data, its first pair, the flags every row shares and each method's first row."""
    from dann import first_look
    from dann.experiments.tables import load_recipes

    spec = load_recipes(ROOT / "sweeps" / "tables" / "digits.yaml")
    source, target = spec["pairs"][0].split(":")
    assert first_look.DATA == {"dataset": spec["dataset"], "source": source, "target": target,
                               "backbone": spec["backbones"][0]}
    assert first_look.COMMON == spec["common"]
    first_rows = {}
    for row in spec["rows"]:
        first_rows.setdefault(row.method, row.flags)
    assert {m: r for m, r in first_look.RECIPES.items()} == {m: first_rows[m] for m in first_look.RECIPES}


def test_the_digits_table_recipes_are_flags_of_their_methods():
    from dann.experiments.tables import check_row, load_recipes

    spec = load_recipes(ROOT / "sweeps" / "tables" / "digits.yaml")
    assert [r.method for r in spec["rows"]][0] == "baseline" and spec["rows"][-1].method == "upper"
    for row in spec["rows"]:
        check_row(row, spec["common"])  # raises on a flag the row's method does not take
    assert all(":" in p for p in spec["pairs"]) and spec["dataset"] == "digits_shipped"


def test_choose_picks_each_familys_best_mean_and_says_whether_leaving_a_pair_out_changes_it(tmp_path):
    """`sweep.py choose`: rows '<family> (<recipe>)' of a tuning table; per family the best mean over
    all pairs and seeds, in bold; the leave-one-pair-out picks say how robust the choice is."""
    import csv

    from dann.experiments.tables import choose_recipes

    accs = {"DANN (reference)": {"a->b": [60, 62], "c->d": [40, 42], "e->f": [30, 30]},
            "DANN (other)": {"a->b": [70, 72], "c->d": [39, 41], "e->f": [20, 21]},
            "MCC (reference)": {"a->b": [80, 80], "c->d": [50, 50], "e->f": [50, 50]}}
    with open(tmp_path / "table.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "pair", "backbone", "mean ± std", "seed", "target_acc"])
        for row, pairs in accs.items():
            for pair, values in pairs.items():
                writer.writerows([row, pair, "lenet_bn", "", seed, value] for seed, value in enumerate(values))
    text = choose_recipes(tmp_path)
    assert "| **DANN (reference)** | 61.0 | 41.0 | 30.0 | 44.0 |" in text  # 'other': 43.8
    assert "without e->f: DANN (other)" in text and "without a->b: same" in text  # leaving e->f out, 'other' would win
    assert "| **MCC (reference)** |" in text and "| DANN (other) |" in text
    with pytest.raises(Exception, match="no table.csv"):
        choose_recipes(tmp_path / "missing")


def test_table_row_picks_the_named_rows_in_the_recipes_order():
    from dann.experiments.tables import Row, pick_rows

    rows = [Row("source", "baseline"), Row("DANN (chosen)", "dann", {"alpha": 1.0}), Row("MCC", "mcc")]
    assert [row.name for row in pick_rows(rows, ["MCC", "source"], "recipes.yaml")] == ["source", "MCC"]


def test_a_table_trains_a_recipe_two_rows_share_once(tmp_path):
    """Two rows with the same flags (a chosen recipe that is the reference one): one run, read by both."""
    from dann.experiments.tables import Row, cell_jobs, shared_runs

    rows = [Row("DANN (reference)", "dann", {"alpha": 1.0}), Row("DANN (chosen)", "dann", {"alpha": 1.0}),
            Row("DANN (other)", "dann", {"alpha": 0.3})]
    jobs = [job for row in rows for job in cell_jobs(tmp_path, "digits_shipped", ("mnist", "uci"), "lenet_bn", row,
                                                       "0,1", {}, [])]
    to_run = shared_runs(jobs)
    assert len(to_run) == 2 and jobs[0].run_dir == jobs[1].run_dir != jobs[2].run_dir
    assert [j.params["row"] for j in jobs] == ["DANN (reference)", "DANN (chosen)", "DANN (other)"]

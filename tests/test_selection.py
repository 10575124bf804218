"""Unsupervised model selection: each rule on a case whose answer is known, the held-out source
validation split, the select/* scores in every method's results.json, and the grid analysis
(`sweep.py selection`, `best --selection`) on hand-written and on really trained grids."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator

from conftest import ROOT, write_tiny_pacs
from test_methods import moons_mlp, two_moons
from tiny_train import register
from train_helpers import clean_env

from dann import plugins, selection
from dann.config import make_config, parse_config
from dann.data import TensorDomain
from dann.datasets import Split, held_out, split_validation
from dann.selection import Evidence

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (see conftest)


def evidence(**fields) -> Evidence:
    return Evidence(**fields)


# ---------------------------------------------------------------------------- the rules, known answers

def test_every_registered_rule_says_which_way_is_better_and_loads():
    for name, rule in plugins.SELECTION.items():
        assert rule.goal in ("maximize", "minimize"), name
        score = plugins.load(plugins.SELECTION, name)
        assert callable(score) and "better" in score.__doc__, name  # its docstring says the direction
    assert {n for n, r in plugins.SELECTION.items() if r.goal == "minimize"} == \
        {"source_val_loss", "entropy", "iwcv", "dev"}


def test_source_validation_accuracy_and_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    e = evidence(logits_val=logits, labels_val=torch.tensor([0, 1, 1]))
    assert selection.source_val_accuracy(e) == pytest.approx(2 / 3)
    right, wrong = math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))
    assert selection.source_val_loss(e) == pytest.approx((2 * right + wrong) / 3, rel=1e-6)


def test_entropy_of_a_uniform_prediction_is_log_c_and_of_a_certain_one_zero():
    assert selection.target_entropy(evidence(logits_t=torch.zeros(5, 7))) == pytest.approx(math.log(7), rel=1e-6)
    certain = torch.full((5, 7), -50.0).scatter_(1, torch.arange(5)[:, None], 50.0)
    assert selection.target_entropy(evidence(logits_t=certain)) < 1e-6


def test_snd_is_higher_for_tight_clusters():
    """Two clusters of 50 identical, confident predictions: each point's soft neighbourhood is
    uniform over the 49 others of its cluster, SND = log 49; predictions spread over the
    simplex have fewer close neighbours."""
    tight = torch.zeros(100, 10)
    tight[:50, 0], tight[50:, 1] = 20.0, 20.0
    spread = 3 * torch.randn(100, 10, generator=torch.Generator().manual_seed(0))
    dense = selection.soft_neighborhood_density(evidence(logits_t=tight))
    assert dense == pytest.approx(math.log(49), rel=1e-4)
    assert selection.soft_neighborhood_density(evidence(logits_t=spread)) < dense - 1


def gaussians(n: int, shift: float):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g) + shift


def test_density_ratios_recover_a_known_shift_and_iwcv_the_target_risk():
    """Source N(0, 1), target N(1, 1): p_t / p_s = exp(x - 1/2). With the loss l(x) = x^2 the
    source risk is E_s[x^2] = 1 and the target risk E_t[x^2] = 2: IWCV estimates the latter."""
    f_s, f_t = gaussians(2000, 1.0)
    w = selection.density_ratios(f_s, f_t)
    middle = f_s.abs().flatten() < 1.5
    assert (w.log() - (f_s.flatten() - 0.5))[middle].abs().mean() < 0.1
    losses = f_s.flatten() ** 2
    assert losses.mean().item() == pytest.approx(1.0, abs=0.1)
    assert selection.iwcv_risk(w, losses).item() == pytest.approx(2.0, abs=0.2)
    assert selection.dev_risk(w, losses).item() == pytest.approx(2.0, abs=0.2)


def test_dev_and_iwcv_equal_the_validation_loss_when_source_and_target_features_coincide():
    features = torch.randn(60, 5, generator=torch.Generator().manual_seed(2))
    logits = torch.randn(60, 4, generator=torch.Generator().manual_seed(3))
    e = evidence(logits_val=logits, labels_val=torch.arange(60) % 4, logits_t=logits,
                 features_val=features, features_t=features.clone())
    assert torch.allclose(e.density_ratios, torch.ones(60), atol=1e-6)
    plain = selection.source_val_loss(e)
    assert selection.dev(e) == pytest.approx(plain, rel=1e-6)
    assert selection.iwcv(e) == pytest.approx(plain, rel=1e-6)


def test_dev_of_a_constant_loss_is_that_loss_whatever_the_weights():
    """The control variate: with l = c, Cov(w l, w) = c Var(w), eta = -c, DEV = c exactly;
    IWCV gives c mean(w), off by the weights' error."""
    w = torch.tensor([0.2, 0.5, 1.0, 3.0, 0.1])
    assert selection.dev_risk(w, torch.full((5,), 0.7)).item() == pytest.approx(0.7, rel=1e-7)  # float32 inputs
    assert selection.iwcv_risk(w, torch.full((5,), 0.7)).item() == pytest.approx(0.7 * w.mean().item())


def test_a_rule_without_what_it_reads_is_left_out_with_its_reason():
    values, missing = selection.score(["source_val_acc", "entropy", "iwcv"], evidence(logits_t=torch.zeros(4, 3)))
    assert list(values) == ["select/entropy"]
    assert missing == ["source_val_acc (no source validation split (--source_val 0))",
                       "iwcv (no source validation split (--source_val 0))"]


# ---------------------------------------------------------------------------- reverse validation

def moons_run(monkeypatch, method: str = "dann"):
    """A reverse-validation context on two moons: source and target alike (the target is a
    second draw of the source distribution), an MLP, a 150-step budget."""
    monkeypatch.setitem(plugins.BACKBONES, "moons_mlp", moons_mlp)
    config = make_config(method=method, backbone="moons_mlp", batch_size=32, lr=0.05, lr_schedule="dann", seed=0)
    x_s, y_s = two_moons(400, seed=1)
    x_v, y_v = two_moons(101, seed=3)
    x_t, y_t = two_moons(400, seed=2)
    domain = lambda name, x, y: TensorDomain(name, x, y, batch_size=32, seed=0)  # noqa: E731
    split = Split(train=domain("source", x_s, y_s), target=domain("target", x_t, y_t), test=domain("test", x_t, y_t),
                  source_test=domain("source", x_s, y_s), classes=["upper", "lower"],
                  source_val=domain("source_val", x_v, y_v))
    run = selection.RunContext(config, Accelerator(cpu=True), split, torch.arange(400), steps=150)
    return run, y_t, y_v


@pytest.mark.parametrize("method", ["dann", "baseline"])
def test_reverse_validation_of_constant_pseudo_labels_is_that_class_share(monkeypatch, method):
    """A model that calls every target example class 0 teaches the reverse model one class:
    its source validation accuracy is class 0's share there, whatever else happens."""
    run, _, y_v = moons_run(monkeypatch, method)
    logits_t = torch.tensor([[5.0, -5.0]]).repeat(400, 1)
    score = selection.reverse_validation(evidence(logits_t=logits_t, labels_val=y_v, run=run))
    assert score == pytest.approx((y_v == 0).float().mean().item())


def test_reverse_validation_of_a_right_model_is_high(monkeypatch):
    run, y_t, y_v = moons_run(monkeypatch)
    logits_t = F.one_hot(y_t, 2).float() * 10  # the true target labels
    assert selection.reverse_validation(evidence(logits_t=logits_t, labels_val=y_v, run=run)) > 0.9


# ---------------------------------------------------------------------------- the source validation split

def test_held_out_split_is_stratified_disjoint_and_fixed():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    kept, val = held_out(labels, 0.1, seed=5)
    assert len(val) == 10 and torch.bincount(labels[val]).tolist() == [5, 3, 2]
    assert sorted(kept.tolist() + val.tolist()) == list(range(100))
    assert torch.equal(held_out(labels, 0.1, seed=5)[1], val) and not torch.equal(held_out(labels, 0.1, seed=6)[1], val)
    assert len(held_out(torch.zeros(4, dtype=torch.long), 0.1, seed=0)[1]) == 1  # at least one


def test_split_validation_refuses_to_leave_nothing_to_train_on():
    domain = TensorDomain("photo", torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), batch_size=1, seed=0)
    assert split_validation(domain, 0.0) == (domain, None)
    with pytest.raises(Exception, match="--source_val 0.5 leaves none of the 1 images of photo"):
        split_validation(domain, 0.5)


@pytest.mark.parametrize("argv, message", [
    (["--source_val", "1"], "--source_val must be in [0, 1)"),
    (["--source_val", "-0.1"], "--source_val must be in [0, 1)"),
    (["--select_rules", "snd,oracle"], "--select_rules: unknown oracle"),
    (["--rv_steps", "0"], "--rv_steps must be >= 1"),
])
def test_bad_selection_flags_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_config("dann", argv)
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_select_rules_shorthands():
    from dann.config import selection_rules

    assert selection_rules(make_config(select_rules="cheap")) == ["source_val_acc", "source_val_loss", "entropy", "snd"]
    assert selection_rules(make_config(select_rules="none")) == []
    assert selection_rules(make_config(select_rules="dev,snd")) == ["snd", "dev"]
    assert selection_rules(make_config(), trains=True) == ["iwcv", "dev", "reverse_val"]


# ---------------------------------------------------------------------------- every method records them

@pytest.fixture
def pacs16(tmp_path):
    return write_tiny_pacs(tmp_path / "PACS", per_class=8)  # 16 images a domain


@pytest.mark.parametrize("method", list(plugins.METHODS))
def test_results_of_every_method_carry_the_selection_scores(method, pacs16, tmp_path, monkeypatch):
    from dann.cli import main

    register(monkeypatch)
    out = tmp_path / method
    flags = ["--cpu", "--backbone", "tiny", "--pretrained", "none", "--data_root", str(pacs16), "--batch_size", "4",
             "--epochs", "2", "--num_workers", "0", "--no-tsne", "--source_val", "0.25", "--output_dir", str(out),
             "--cache_dir", str(tmp_path / "cache")]
    flags += ["--bottleneck_dim", "8"] if method == "adabn" else []  # AdaBN needs batch norm
    script = plugins.script_of(method)
    assert main(script, flags + ([] if script == "baseline" else ["--method", method])) == 0
    results = json.loads((out / "results.json").read_text())
    names = [f"select/{n}" for n in plugins.SELECTION]
    assert all(math.isfinite(results[k]) for k in names), {k: results.get(k) for k in names}
    assert results["select_images"] == {"source_val": 4, "target": 16} and results["source_val_images"] == {"photo": 4}
    assert results["runs"][0]["select/snd"] == results["select/snd"]  # per seed, and their mean at top level
    cheap = [f"select/{n}" for n, rule in plugins.SELECTION.items() if not rule.trains]
    for record in results["epochs"]:  # the cheap ones at each evaluation too; the last is the end's
        assert set(cheap) < set(record) and "select/iwcv" not in record
    assert all(results["epochs"][-1][k] == pytest.approx(results[k]) for k in cheap)


# ---------------------------------------------------------------------------- choosing on a grid

def written_grid(folder, scores: dict[float, dict], target="art_painting", extra=(), seeds=(0, 1)):
    """A finished local sweep over alpha, as `sweep.py run` leaves it, from hand-written
    results.json files: scores[alpha] = {'target_acc': [per seed], 'snd': [per seed], ...}."""
    from dann.experiments import grids
    from dann.tracking import summarize

    config = {"program": "train_dann.py", "method": "grid", "metric": {"name": "target_acc", "goal": "maximize"},
              "parameters": {"source": {"value": "photo"}, "target": {"value": target},
                             "alpha": {"values": list(scores)}}}
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump(config))
    (folder / "extra_args.json").write_text(json.dumps(list(extra)))
    for alpha, values in scores.items():
        params = {"source": "photo", "target": target, "alpha": alpha}
        runs = [{"target": target, "seed": s, "target_acc": values["target_acc"][i], "best_target_acc": 0.0,
                 "source_acc": 0.9, **{f"select/{k}": v[i] for k, v in values.items() if k != "target_acc"}}
                for i, s in enumerate(seeds)]
        run_dir = folder / "runs" / grids.run_key(params, list(extra))
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps(
            {"method": "dann", "config": {"source": "photo", "target": target, "alpha": alpha}, **summarize(runs),
             "runs": runs}))
    return folder


GRID = {  # alpha: per-seed target accuracy and scores. The oracle's pick is alpha 0.3 on both seeds.
    0.1: {"target_acc": [0.50, 0.52], "snd": [1.0, 1.1], "entropy": [0.2, 0.2], "source_val_acc": [0.9, 0.9]},
    0.3: {"target_acc": [0.60, 0.62], "snd": [2.0, 2.1], "entropy": [0.9, 0.8], "source_val_acc": [0.9, 0.9]},
    1.0: {"target_acc": [0.40, 0.56], "snd": [1.5, 1.6], "entropy": [0.5, 0.5], "source_val_acc": [0.8, 0.9]},
}


def sweep_main(capsys, *argv) -> str:
    import sweep

    assert sweep.main(list(argv)) == 0
    return capsys.readouterr().out


def test_best_picks_by_the_rule_asked_for(tmp_path, capsys):
    folder = written_grid(tmp_path / "grid", GRID)
    by_snd = sweep_main(capsys, "best", str(folder), "--selection", "snd")  # higher is better: alpha 0.3
    assert "by snd (higher is better): select/snd=2.0500" in by_snd and "alpha: 0.3" in by_snd
    by_entropy = sweep_main(capsys, "best", str(folder), "--selection", "entropy")  # lower is better: alpha 0.1
    assert "by entropy (lower is better): select/entropy=0.2000" in by_entropy and "alpha: 0.1" in by_entropy
    oracle = sweep_main(capsys, "best", str(folder), "--selection", "oracle")
    assert "target_acc=0.6100" in oracle and "--alpha=0.3" in oracle.split("final run:")[1]


def test_best_with_a_rule_no_run_recorded_is_one_line(tmp_path, capsys):
    import sweep

    from dann.errors import UserError

    folder = written_grid(tmp_path / "grid", GRID)
    with pytest.raises(UserError, match="--selection dev: none of the 3 finished runs has select/dev"):
        sweep.main(["best", str(folder), "--selection", "dev"])
    with pytest.raises(UserError, match="--selection xdomain: none of the 3 finished runs"):
        sweep.main(["best", str(folder), "--selection", "xdomain"])
    with pytest.raises(UserError, match="--selection nope: unknown rule; choose from oracle, xdomain, source_val_acc"):
        sweep.main(["best", str(folder), "--selection", "nope"])


def test_selection_table_measures_each_rule_against_the_oracle(tmp_path, capsys):
    """By hand: the oracle picks alpha 0.3 (60, 62). SND ranks like the oracle on seed 1 and
    picks 0.3 on both seeds: regret 0. Entropy (lower is better) picks 0.1: regret 10 points on
    each seed. Source validation accuracy ties 0.1 and 0.3 on seed 0 (mean 55: regret 5), and
    ties all three on seed 1 (mean 56.67: regret 5.33). A second pair (photo -> cartoon) with the
    same grid makes xdomain choose by the other pair's accuracy."""
    first = written_grid(tmp_path / "art", GRID)
    cartoon = {0.1: {"target_acc": [0.30, 0.30], "snd": [1.0, 1.0]},
               0.3: {"target_acc": [0.20, 0.20], "snd": [1.0, 2.0]},
               1.0: {"target_acc": [0.10, 0.10], "snd": [3.0, 3.0]}}
    second = written_grid(tmp_path / "cartoon", cartoon, target="cartoon")
    printed = sweep_main(capsys, "selection", str(first), str(second), "--out", str(tmp_path / "sel"))
    rows = {r["rule"]: r for r in csv_rows(tmp_path / "sel" / "selection.csv")}
    assert list(rows) == ["oracle", "xdomain", "source_val_acc", "entropy", "snd"]
    assert float(rows["oracle"]["regret"]) == 0 and float(rows["oracle"]["spearman"]) == pytest.approx(1)
    # art: snd picks 0.3 twice (regret 0, 0); cartoon: snd picks 1.0 twice (regret 20, 20)
    assert float(rows["snd"]["regret"]) == pytest.approx(10) and float(rows["snd"]["worst_regret"]) == pytest.approx(20)
    assert float(rows["snd"]["target_acc"]) == pytest.approx((60 + 62 + 10 + 10) / 4)
    # ranks of snd against ranks of accuracy over alpha 0.1, 0.3, 1.0: art seed 0 (1, 3, 2) vs (2, 3, 1):
    # rho 0.5; seed 1 (1, 3, 2) vs (1, 3, 2): 1; cartoon seed 0 (1.5, 1.5, 3) vs (3, 2, 1): -0.866; seed 1: -1
    assert float(rows["snd"]["spearman"]) == pytest.approx((0.5 + 1 - math.sqrt(3) / 2 - 1) / 4)
    assert float(rows["entropy"]["regret"]) == pytest.approx(10) and rows["entropy"]["choices"] == "2"
    assert float(rows["source_val_acc"]["regret"]) == pytest.approx((5 + (62 - (52 + 62 + 56) / 3)) / 2)
    # xdomain on art chooses by cartoon's mean (0.1: 30), regret 10 twice; on cartoon by art's (0.3), regret 10
    assert float(rows["xdomain"]["regret"]) == pytest.approx(10)
    assert "| snd | higher | 35.50 | 10.00 | 20.00 |" in printed and "lower" in rows["entropy"]["better"]
    for rule in ("snd", "entropy", "source_val_acc"):
        assert (tmp_path / "sel" / f"scatter_{rule}.png").stat().st_size > 1000
    assert len(csv_rows(tmp_path / "sel" / "selection_runs.csv")) == 12  # 3 alphas x 2 pairs x 2 seeds


def csv_rows(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_selection_needs_a_choice_to_measure(tmp_path):
    import sweep

    from dann.errors import UserError

    folder = written_grid(tmp_path / "grid", {0.1: GRID[0.1]})
    with pytest.raises(UserError, match="no pair and seed of these grids has two finished configurations"):
        sweep.main(["selection", str(folder)])
    with pytest.raises(UserError, match="needs --out"):
        sweep.main(["selection", str(folder), str(folder)])


@pytest.mark.slow
def test_selection_on_a_tiny_trained_grid_writes_its_table_and_figures(tmp_path):
    """2 configurations x 2 seeds, 2 steps each, on the CPU: `sweep.py run`, then `sweep.py selection`."""
    data = write_tiny_pacs(tmp_path / "PACS", per_class=8, size=32)  # 32x32: LeNet takes them as they are
    config = {"program": "train_dann.py", "method": "grid", "metric": {"name": "target_acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "folder"}, "data_root": {"value": str(data)},
                             "source": {"value": "photo"}, "target": {"value": "art_painting"},
                             "backbone": {"value": "lenet"}, "pretrained": {"value": "none"},
                             "seeds": {"value": "0,1"}, "alpha": {"values": [0.1, 1.0]}},
              "command": ["${interpreter}", "${program}", "${args}"]}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    env = clean_env(tmp_path)
    quick = ["--cpu", "--max_steps=2", "--batch_size=4", "--no-tsne", "--num_workers=0", "--source_val=0.25",
             f"--cache_dir={tmp_path / 'cache'}"]
    run = subprocess.run([sys.executable, str(ROOT / "sweep.py"), "run", str(tmp_path / "tiny.yaml"), "--out",
                          str(tmp_path / "grid"), "--command_style", "python", "--wandb", "off", "--", *quick],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "2 of 2 runs finished" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    tracked = {**env, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    analysed = subprocess.run([sys.executable, str(ROOT / "sweep.py"), "selection", str(tmp_path / "grid"),
                               "--wandb_project", "dann-pacs"], cwd=ROOT, env=tracked, capture_output=True, text=True,
                              timeout=300)
    assert analysed.returncode == 0, analysed.stderr[-3000:]
    out = tmp_path / "grid" / "selection"
    table = (out / "selection.md").read_text()
    assert analysed.stdout.startswith(table) and "W&B: " in analysed.stdout
    from train_helpers import inspect_wandb

    summary = inspect_wandb(next((tmp_path / "wandb").glob("offline-run-*")), tracked)["summary"]
    assert summary["selection"]["_type"] == "table-file" and summary["selection"]["nrows"] == 1 + len(plugins.SELECTION)
    lines = table.splitlines()
    for rule in ["oracle", *plugins.SELECTION]:  # every rule, each over the 2 seeds' choices
        assert any(line.startswith(f"| {rule} |") and line.rstrip().endswith("| 2 |") for line in lines), rule
    for rule in plugins.SELECTION:
        assert (out / f"scatter_{rule}.png").stat().st_size > 1000
    assert len(csv_rows(out / "selection_runs.csv")) == 4


def test_a_table_row_with_a_grid_is_chosen_per_cell_by_the_rule(tmp_path):
    from dann.experiments.tables import Row, cell_jobs, choose_points, table

    row = Row("DANN", "dann", {"alpha": [0.1, 1.0], "lr": 0.01})
    assert row.grid == ["alpha"] and row.points() == [{"alpha": 0.1, "lr": 0.01}, {"alpha": 1.0, "lr": 0.01}]
    pairs = [("mnist", "mnist_m"), ("mnist", "uci")]
    jobs = [j for pair in pairs for j in cell_jobs(tmp_path, "digits_shipped", pair, "lenet", row, "0,1", {}, [])]
    assert len(jobs) == 4 and len({j.run_dir for j in jobs}) == 4
    assert "--alpha=1.0" in jobs[1].command and "--lr=0.01" in jobs[1].command
    recorded = {(0, 0.1): (0.50, 2.0), (0, 1.0): (0.70, 1.0), (1, 0.1): (0.40, 1.0), (1, 1.0): (0.30, 3.0)}
    for job in jobs:
        acc, snd = recorded[pairs.index(tuple(job.params["pair"])), job.params["point"]["alpha"]]
        job.run_dir.mkdir(parents=True)
        (job.run_dir / "results.json").write_text(json.dumps({"target_acc": acc, "select/snd": snd, "runs": [
            {"seed": 0, "target_acc": acc}, {"seed": 1, "target_acc": acc}]}))
    chosen, listing = choose_points(jobs, "snd")  # the highest snd: alpha 0.1 on mnist_m, 1.0 on uci
    assert [j.params["point"]["alpha"] for j in chosen] == [0.1, 1.0]
    assert {j.params["row"] for j in chosen} == {"DANN (by snd)"} and "snd (higher is better)" in listing
    markdown, _ = table(chosen)
    assert "| DANN (by snd) | 50.0 ± 0.0 | 30.0 ± 0.0 |" in markdown
    chosen, _ = choose_points(jobs, "xdomain")  # by the other pair's accuracy: uci's (0.40 > 0.30), mnist_m's
    assert [j.params["point"]["alpha"] for j in chosen] == [0.1, 1.0]
    chosen, _ = choose_points(jobs, "oracle")
    assert [j.params["point"]["alpha"] for j in chosen] == [1.0, 0.1]


def test_a_table_grid_without_a_rule_is_refused_before_anything_runs(tmp_path):
    from dann.experiments.tables import Row, run_table
    from dann.errors import UserError
    from dann.experiments.local import Runner

    rows = [Row("DANN", "dann", {"alpha": [0.1, 1.0]})]
    kwargs = dict(dataset="digits_shipped", pairs=[("mnist", "mnist_m")], rows=rows, backbones=["lenet"], seeds="0",
                  runner=Runner([None]))
    with pytest.raises(UserError, match="row 'DANN' searches alpha: give --selection"):
        run_table(tmp_path / "t", **kwargs)
    with pytest.raises(UserError, match="--selection snf: unknown rule"):
        run_table(tmp_path / "t", selection="snf", **kwargs)
    assert not (tmp_path / "t").exists()


def test_the_report_names_the_rule_that_chose_each_row(tmp_path):
    from dann.experiments import homework_report

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps(
        {"method": "dann", "config": {"source": "photo", "target": "art_painting"}, "target_acc": 0.5}))
    table = homework_report.build_table({"3B": str(tmp_path / "a"), "3B-snd": str(tmp_path / "a"), "mine": str(tmp_path / "a")},
                               {"3B-snd": "snd (higher is better)"})
    assert [row[-1] for row in table] == ["oracle (target accuracy: reads the target labels)",
                                          "snd (higher is better)", ""]
    assert table[1][1] == "DANN, hyperparameters chosen on the 3B grid without target labels"


def test_a_quick_check_scores_the_few_images_its_evaluation_reads(pacs16, tmp_path, monkeypatch):
    """--max_steps 2 at batch 4 evaluates 8 images of each domain: the scores read those 8 too."""
    from dann.cli import main

    register(monkeypatch)
    out = tmp_path / "quick"
    assert main("dann", ["--cpu", "--backbone", "tiny", "--pretrained", "none", "--data_root", str(pacs16),
                         "--batch_size", "4", "--max_steps", "2", "--num_workers", "0", "--source_val", "0.25",
                         "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache")]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["num_target_eval"] == 8 and results["select_images"] == {"source_val": 4, "target": 8}
    assert all(math.isfinite(results[f"select/{n}"]) for n in plugins.SELECTION)

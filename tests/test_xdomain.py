"""Cross-domain validation in one run: --target cartoon,sketch trains one model per target with
the same hyperparameters and seed, logs each in its own tracker run, and their mean in the group's
summary run."""
from __future__ import annotations

import pytest
from conftest import write_tiny_pacs
from train_helpers import clean_env, inspect_wandb, train


@pytest.fixture
def four_domains(tmp_path):
    return write_tiny_pacs(tmp_path / "PACS", domains=("photo", "art_painting", "cartoon", "sketch"))


@pytest.mark.slow
def test_xdomain_dann_logs_both_targets_and_their_mean(four_domains, tmp_path):
    env = clean_env(tmp_path, WANDB_MODE="offline")
    out = tmp_path / "run"
    proc, results = train("train_dann.py", four_domains, out, "--target", "cartoon,sketch", "--no-tsne", "--save_model",
                          "--report_to", "wandb", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(r["target"], r["seed"]) for r in results["runs"]] == [("cartoon", 0), ("sketch", 0)]
    mean = (results["cartoon/target_acc"] + results["sketch/target_acc"]) / 2
    assert results["xdomain/target_acc_mean"] == pytest.approx(mean)
    for t in ("cartoon", "sketch"):
        assert (out / t / "model.safetensors").is_file() and (out / t / "confusion_matrix.png").is_file()
    runs = {r["name"]: r for r in (inspect_wandb(d, env) for d in (out / "wandb").glob("offline-run-*"))}
    assert set(runs) == {"run/cartoon", "run/sketch", "run"}
    assert runs["run"]["summary"]["xdomain/target_acc_mean"] == pytest.approx(mean)  # the group's summary run
    for t in ("cartoon", "sketch"):
        assert runs[f"run/{t}"]["summary"]["eval/target_acc"] == pytest.approx(results[f"{t}/target_acc"])
        assert runs[f"run/{t}"]["config"]["target"] == t and "train/class_loss" in runs[f"run/{t}"]["summary"]


@pytest.mark.slow
def test_xdomain_baseline_over_seeds_gives_mean_and_std(four_domains, tmp_path):
    out = tmp_path / "run"
    proc, results = train("train_baseline.py", four_domains, out, "--target", "cartoon,sketch",
                          "--seeds", "3,4", "--no-tsne", "--save_model", env=clean_env(tmp_path))  # tracking off
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(r["target"], r["seed"]) for r in results["runs"]] == [
        ("cartoon", 3), ("cartoon", 4), ("sketch", 3), ("sketch", 4)]
    accs = {(r["target"], r["seed"]): r["target_acc"] for r in results["runs"]}
    per_seed = [(accs["cartoon", s] + accs["sketch", s]) / 2 for s in (3, 4)]
    assert results["target_acc"] == pytest.approx(sum(per_seed) / 2)
    assert results["target_acc_std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2 ** 0.5)
    assert results["xdomain/target_acc_mean"] == pytest.approx(
        (accs["cartoon", 3] + accs["cartoon", 4] + accs["sketch", 3] + accs["sketch", 4]) / 4)
    for t in ("cartoon", "sketch"):
        for s in (3, 4):
            assert (out / t / f"seed{s}" / "model.safetensors").is_file()
    assert not (out / "wandb").exists()


def test_bad_seeds_flag_is_one_line(capsys):
    from dann.config import parse_config

    with pytest.raises(SystemExit) as e:
        parse_config("dann", ["--seeds", "0,x"])
    assert e.value.code == 2 and "--seeds must be comma-separated integers" in capsys.readouterr().err

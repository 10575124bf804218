"""Tracking, read back with the trackers' own readers (W&B's record reader, TensorBoard's event
reader): one run per model in a group, the aggregate in the group's summary run, the figures,
the summary at the last step, TensorBoard's hparams entry, the resolved settings, the model
artifact and results.json; an unreachable or logged-out W&B gives one warning and the run goes on."""
from __future__ import annotations

import json

import pytest
from conftest import write_tiny_pacs
from train_helpers import clean_env, tensorboard_run, train, wandb_run

from dann.tracking import summarize


def test_summarize_means_and_std_over_seeds_and_targets():
    runs = [{"target": t, "seed": s, "target_acc": acc, "best_target_acc": acc + 0.1, "source_acc": 0.9}
            for (t, s, acc) in [("cartoon", 0, 0.4), ("sketch", 0, 0.2), ("cartoon", 1, 0.6), ("sketch", 1, 0.4)]]
    summary = summarize(runs)
    assert summary["cartoon/target_acc"] == pytest.approx(0.5)
    assert summary["sketch/target_acc"] == pytest.approx(0.3)
    assert summary["xdomain/target_acc_mean"] == pytest.approx(0.4)
    assert summary["target_acc"] == pytest.approx(0.4)
    # per-seed means 0.3 and 0.5: sample std 0.1414
    assert summary["target_acc_std"] == pytest.approx(0.1414, abs=1e-4)
    single = summarize(runs[:1])
    assert single["target_acc"] == 0.4 and single["target_acc_std"] == 0.0
    assert "xdomain/target_acc_mean" not in single


@pytest.mark.slow
def test_offline_wandb_run_has_config_summary_and_tsne_images(tiny_pacs, tmp_path):
    env = clean_env(tmp_path, WANDB_MODE="offline")
    out = tmp_path / "run"
    proc, results = train("train_baseline.py", tiny_pacs, out, "--report_to", "wandb", "--lr", "0.002",
                          "--run_name", "tiny-offline", "--wandb_group", "3A", "--wandb_tags", "test,cpu",
                          "--max_steps", "2", "--iters_per_epoch", "1", "--epochs", "2",
                          "--tsne", "--save_model", env=env)  # asked for: --max_steps skips them
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("tsne_by_class.png", "tsne_by_domain.png", "confusion_matrix.png", "model.safetensors"):
        assert (out / name).is_file(), name
    run_dirs = list((out / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    record = wandb_run(run_dirs[0], env)
    assert record["state"] == "finished" and record["name"] == "tiny-offline"
    assert (record["group"], record["job_type"]) == ("3A", "baseline")
    config = record["config"]
    assert config["lr"] == 0.002 and config["wandb_group"] == "3A"
    # the resolved settings, beside the flags
    assert (config["num_processes"], config["global_batch"], config["per_process_batch"]) == (1, 4, 4)
    assert (config["precision"], config["device"]) == ("fp32", "cpu")
    assert (config["steps_per_epoch"], config["total_steps"], config["num_models"]) == (1, 2, 1)
    summary = record["summary"]
    for key in ("target_acc", "best_target_acc", "source_acc", "target_mean_class_acc"):
        assert summary[key] == pytest.approx(results[key])
    assert "train/class_loss" in summary and "eval/target_acc" in summary and summary["_step"] == 2
    for name in ("tsne_by_class", "tsne_by_domain", "confusion_matrix"):
        image = summary[f"figures/{name}"]
        assert image["_type"] == "image-file"
        assert (run_dirs[0] / "files" / image["path"]).is_file()
    assert summary["charts/confusion_matrix_table"]["_type"] == "table-file"  # W&B's confusion-matrix chart
    # the sweep metric in the history at each evaluation (hyperband reads it), the summary at the last step
    history = record["history"]
    assert [step for step, row in sorted(history.items()) if "target_acc" in row] == [1, 2]
    assert history[2]["target_acc"] == pytest.approx(results["target_acc"])
    assert history[2]["target_acc_std"] == 0 and history[2]["eval/target_mean_class_acc"] == pytest.approx(
        results["target_mean_class_acc"])
    assert json.loads((run_dirs[0] / "files" / "results.json").read_text())["target_acc"] == results["target_acc"]


@pytest.mark.slow
def test_one_run_per_seed_in_a_group_with_a_summary_run_and_tensorboard_figures(tiny_pacs, tmp_path):
    """--seeds 0,1 --report_to all --log_model: W&B gets a run per seed (its own steps, config seed,
    model artifact) and the group's summary run (the mean and std over seeds in its summary and
    history, results.json); TensorBoard a run per seed (figures, numbers at the last step, hparams
    with their metrics) and the summary's run, each named after its folder."""
    wandb_dir = tmp_path / "wandb_home"
    env = clean_env(tmp_path, WANDB_MODE="offline", WANDB_DIR=str(wandb_dir))
    out = tmp_path / "run"
    proc, results = train("train_dann.py", tiny_pacs, out, "--report_to", "all", "--seeds", "0,1", "--log_model",
                          "--no-tsne", "--max_steps", "2", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (out / "wandb").exists(), "WANDB_DIR says where W&B writes"
    runs = [wandb_run(d, env) for d in sorted((wandb_dir / "wandb").glob("offline-run-*"))]
    by_name = {r["name"]: r for r in runs}
    assert set(by_name) == {"run/seed0", "run/seed1", "run"}
    assert {r["group"] for r in runs} == {"run"}
    for seed in (0, 1):
        member = by_name[f"run/seed{seed}"]
        mine = results["runs"][seed]
        assert member["job_type"] == "dann" and member["config"]["seed"] == seed and member["config"]["seeds"] == ""
        assert member["summary"]["target_acc"] == pytest.approx(mine["target_acc"]) and member["summary"]["_step"] == 2
        assert "figures/confusion_matrix" in member["summary"]
        assert [(kind, files) for kind, _, files in member["artifacts"] if kind == "model"] == [
            ("model", ["model.safetensors"])]
    group = by_name["run"]
    assert group["job_type"] == "summary" and group["config"]["seeds"] == "0,1"
    for key in ("target_acc", "target_acc_std", "target_mean_class_acc", "target_mean_class_acc_std"):
        assert group["summary"][key] == pytest.approx(results[key])
        assert group["history"][2][key] == pytest.approx(results[key])
    assert group["summary"]["seeds"] == [0, 1] and "results.json" in group["files"]

    for seed in (0, 1):
        model = tensorboard_run(out / f"seed{seed}")
        assert model["images"] == {"figures/confusion_matrix": [2]}
        assert model["scalars"]["target_acc"] == [(2, pytest.approx(results["runs"][seed]["target_acc"]))]
        assert model["scalars"]["eval/target_mean_class_acc"][-1][0] == 2
        assert {"target_acc", "target_mean_class_acc"} <= set(model["hparams"]["metrics"])
        assert model["hparams"]["hparams"]["seed"] == seed and model["hparams"]["hparams"]["global_batch"] == 4
    command = tensorboard_run(out)
    assert command["scalars"]["target_acc"] == [(2, pytest.approx(results["target_acc"]))]  # the last step, not 0
    assert {"target_acc", "target_acc_std"} <= set(command["hparams"]["metrics"])
    assert command["hparams"]["hparams"]["seeds"] == "0,1" and command["hparams"]["hparams"]["precision"] == "fp32"
    assert not list(out.glob("dann-pacs*")), "no folder named after the W&B project"


@pytest.mark.slow
def test_under_a_sweep_agent_several_models_share_the_sweeps_run(tmp_path):
    """`wandb agent` gives the process one run (WANDB_RUN_ID): both targets' metrics go to it under
    their prefixes, each with its own x-axis, and the sweep's metric is in its summary and history."""
    data = write_tiny_pacs(tmp_path / "PACS", domains=("photo", "art_painting", "cartoon"))
    env = clean_env(tmp_path, WANDB_MODE="offline", WANDB_SWEEP_ID="sweep1", WANDB_RUN_ID="agentrun1")
    out = tmp_path / "run"
    proc, results = train("train_dann.py", data, out, "--report_to", "wandb", "--target", "art_painting,cartoon",
                          "--no-tsne", "--max_steps", "2", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    run = wandb_run(run_dir, env)
    summary = run["summary"]
    assert summary["xdomain/target_acc_mean"] == pytest.approx(results["xdomain/target_acc_mean"])
    for t in ("art_painting", "cartoon"):
        assert summary[f"{t}/eval/target_acc"] == pytest.approx(results[f"{t}/target_acc"])
        assert f"{t}/train/class_loss" in summary and summary[f"{t}/step"] == 2
    assert run["history"][4]["xdomain/target_acc_mean"] == pytest.approx(results["xdomain/target_acc_mean"])


@pytest.mark.slow
def test_logged_out_wandb_warns_once_and_the_run_goes_on(tiny_pacs, tmp_path):
    env = clean_env(tmp_path, WANDB_MODE="online")  # no API key anywhere
    out = tmp_path / "run"
    proc, results = train("train_baseline.py", tiny_pacs, out, "--report_to", "wandb", "--no-tsne", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("W&B unavailable") == 1, proc.stderr[-3000:]
    assert {"target_acc", "best_target_acc", "source_acc", "epochs", "confusion_matrix"} <= set(results)
    assert not (out / "tsne_by_class.png").exists() and (out / "confusion_matrix.png").is_file()
    assert list((out / "wandb").glob("offline-run-*")), "the fallback logs offline"
    assert f"`wandb sync {out / 'wandb'}/offline-run-*`" in proc.stderr  # the folder `wandb sync` takes


@pytest.mark.slow
def test_unreachable_wandb_warns_once_and_never_shows_the_key(tiny_pacs, tmp_path):
    key = "0123456789abcdef0123456789abcdef01234567"
    env = clean_env(tmp_path, WANDB_MODE="online", WANDB_API_KEY=key,
                    WANDB_BASE_URL="http://127.0.0.1:9", WANDB_INIT_TIMEOUT="2")
    out = tmp_path / "run"
    proc, results = train("train_baseline.py", tiny_pacs, out, "--report_to", "wandb", "--no-tsne", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("W&B unavailable") == 1, proc.stderr[-3000:]
    assert results["target_acc"] is not None
    assert key not in proc.stdout + proc.stderr + (out / "results.json").read_text()

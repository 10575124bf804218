"""W&B tracking: an offline run holds the config, the summary and both t-SNE images (read back
with W&B's own reader); an unreachable or logged-out W&B gives one warning and the run goes on."""
from __future__ import annotations

import pytest
from train_helpers import clean_env, inspect_wandb, train

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
                          "--tsne", "--save_model", env=env)  # asked for: --max_steps skips them
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("tsne_by_class.png", "tsne_by_domain.png", "confusion_matrix.png", "model.safetensors"):
        assert (out / name).is_file(), name
    run_dirs = list((out / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    record = inspect_wandb(run_dirs[0], env)
    assert record["state"] == "finished" and record["name"] == "tiny-offline"
    assert record["config"]["lr"] == 0.002 and record["config"]["wandb_group"] == "3A"
    summary = record["summary"]
    for key in ("target_acc", "best_target_acc", "source_acc"):
        assert summary[key] == pytest.approx(results[key])
    assert "train/class_loss" in summary and "eval/target_acc" in summary
    for name in ("tsne_by_class", "tsne_by_domain", "confusion_matrix"):
        image = summary[f"figures/{name}"]
        assert image["_type"] == "image-file"
        assert (run_dirs[0] / "files" / image["path"]).is_file()


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

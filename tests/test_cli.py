"""Flag checking: each nonsense value gets an argparse-style message; user errors are one line."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from dann.config import TrainConfig, parse_config


@pytest.mark.parametrize("argv, message", [
    (["--lr", "0"], "--lr must be > 0"),
    (["--lr", "-0.1"], "--lr must be > 0"),
    (["--batch_size", "0"], "--batch_size must be > 0"),
    (["--target", "clipart"], "unknown domain 'clipart'"),
    (["--source", "clipart"], "invalid choice: 'clipart'"),
    (["--source", "photo", "--target", "photo"], "same as --source"),
    (["--alpha", "-1"], "--alpha must be >= 0"),
    (["--alpha_schedule", "linear"], "invalid choice: 'linear'"),
    (["--report_to", "mlflow"], "invalid choice: 'mlflow'"),
    (["--epochs", "ten"], "invalid int value: 'ten'"),
])
def test_bad_flag_values_are_rejected(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config("dann", argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage:" in err


def test_flags_map_onto_the_config():
    config = parse_config("dann", ["--lr", "0.01", "--alpha", "0.5", "--augment", "--target", "sketch"])
    assert (config.lr, config.alpha, config.augment, config.target) == (0.01, 0.5, True, "sketch")
    assert parse_config("dann", []) == TrainConfig()


def test_baseline_flags():
    config = parse_config("baseline", ["--train_on", "target", "--target", "photo"])
    assert config.train_on == "target"  # the upper bound may train and test on one domain
    with pytest.raises(SystemExit):
        parse_config("baseline", ["--alpha", "0.1"])  # no G_d, no alpha
    with pytest.raises(SystemExit):
        parse_config("dann", ["--train_on", "target"])


def run_script(*args, **env):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


@pytest.mark.slow
def test_missing_data_root_offline_is_one_clear_line(tmp_path):
    result = run_script("train_dann.py", "--cpu", "--pretrained", "none", "--data_root",
                        str(tmp_path / "PACS"), "--output_dir", str(tmp_path / "out"),
                        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(tmp_path / "PACS") in lines[0] and "--data_root PATH" in lines[0]

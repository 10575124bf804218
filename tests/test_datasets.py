"""Datasets as plug-ins: any folder of domains trains with no code change; the digits
datasets (from files in their real formats, written here) follow their own protocol; the
comparison table of `sweep.py table`."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from tiny_train import register

from conftest import ROOT, write_tiny_pacs
from dann.cli import main
from test_digits_formats import write_mnist, write_svhn
from train_helpers import clean_env

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (see conftest)


@pytest.fixture(autouse=True)
def tiny_plugins(monkeypatch):
    register(monkeypatch)


def office_like(tmp_path):
    """Three domains and three classes, none of them PACS's names."""
    return write_tiny_pacs(tmp_path / "office", domains=("real", "painting", "clipart"),
                           classes=("bike", "mug", "pen"), per_class=2)


def test_a_folder_dataset_with_other_domain_names_trains(tmp_path, capsys):
    root = office_like(tmp_path)
    out = tmp_path / "run"
    flags = ["--dataset", "folder", "--data_root", str(root), "--source", "real", "--target", "clipart,painting",
             "--cpu", "--backbone", "tiny", "--pretrained", "none", "--epochs", "1", "--batch_size", "2",
             "--no-tsne", "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(out)]
    assert main("dann", flags) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["classes"] == ["bike", "mug", "pen"] and results["targets"] == ["clipart", "painting"]
    assert [r["num_target_eval"] for r in results["runs"]] == [6, 6]  # transductive: the whole target


def test_folder_dataset_mistakes_name_the_domains_found(tmp_path, capsys):
    root = office_like(tmp_path)
    base = ["--dataset", "folder", "--data_root", str(root), "--cpu", "--backbone", "tiny", "--pretrained", "none",
            "--output_dir", str(tmp_path / "out")]
    assert main("dann", base) == 1
    assert "--dataset folder needs --source and --target; domains in" in capsys.readouterr().err
    assert main("dann", base + ["--source", "real", "--target", "sketch"]) == 1
    assert "unknown domain 'sketch' in --dataset folder; choose from clipart, painting, real" in capsys.readouterr().err
    assert main("dann", base[:2] + ["--data_root", str(tmp_path / "nothing"), *base[4:], "--source", "a",
                                    "--target", "b"]) == 1
    assert f"--data_root {tmp_path / 'nothing'}: no such folder" in capsys.readouterr().err


def digits_root(tmp_path):
    """MNIST (3 train, 3 test) and SVHN (4 train, 4 test) in their distributed formats."""
    root = tmp_path / "digits"
    write_mnist(root, labels=(7, 0, 9))
    write_svhn(root, y=(10, 3, 1, 2))
    return root


def test_digits_train_on_train_splits_and_test_on_the_target_test_split(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--dataset", "digits", "--data_root", str(digits_root(tmp_path)), "--source", "mnist",
             "--target", "svhn", "--cpu", "--backbone", "lenet", "--pretrained", "none", "--epochs", "2",
             "--batch_size", "2", "--tsne_samples", "4", "--output_dir", str(out)]
    assert main("dann", flags) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["classes"] == [str(d) for d in range(10)]
    assert results["num_target_eval"] == 4 and results["num_source_eval"] == 3  # the test splits
    assert results["steps"] == 2 * 2  # 3 source train images at batch 2: 2 steps per epoch
    assert np.array(results["confusion_matrix"]).shape == (10, 10)
    assert (out / "tsne_by_class.png").is_file()


def test_digits_in_another_folder_are_never_downloaded(tmp_path, capsys):
    flags = ["--dataset", "digits", "--data_root", str(tmp_path / "elsewhere"), "--source", "mnist",
             "--target", "svhn", "--cpu", "--backbone", "lenet", "--pretrained", "none",
             "--output_dir", str(tmp_path / "out")]
    assert main("dann", flags) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: MNIST train file") and "--data_root" in error


@pytest.mark.slow
def test_comparison_table_of_methods_over_seeds(tmp_path):
    root = digits_root(tmp_path)
    command = [sys.executable, str(ROOT / "sweep.py"), "table", "--out", str(tmp_path / "table"), "--dataset",
               "digits", "--pairs", "mnist:svhn", "--methods", "baseline,dann,upper", "--backbones", "lenet",
               "--seeds", "0,1", "--wandb", "off", "--runs_per_gpu", "2", "--", f"--data_root={root}", "--cpu",
               "--pretrained=none", "--max_steps=2", "--batch_size=2", "--no-tsne", "--alpha=0.5"]
    done = subprocess.run(command, capture_output=True, text=True, env=clean_env(tmp_path), timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = (tmp_path / "table" / "table.md").read_text().splitlines()
    assert table[0] == "| target accuracy (%) | mnist → svhn (lenet) |"
    assert [row.split(" | ")[0] for row in table[2:]] == ["| trained on source", "| DANN",
                                                         "| trained on target (upper bound)"]
    assert all("±" in row for row in table[2:])
    cells = tmp_path / "table" / "runs" / "mnist-svhn" / "lenet"
    dann, = (json.loads(p.read_text()) for p in cells.glob("dann-*/results.json"))
    assert dann["config"]["alpha"] == 0.5 and dann["seeds"] == [0, 1]
    upper, = (json.loads(p.read_text()) for p in cells.glob("trained_on_target_upper_bound-*/results.json"))
    assert upper["config"]["train_on"] == "target" and upper["method"] == "baseline"
    assert "gain over trained on source" in (tmp_path / "table" / "paired.md").read_text()

"""Mean per-class accuracy, reported for every dataset: eval/*_mean_class_acc in each evaluation,
target_mean_class_acc in results.json and the summary; where a dataset's papers report it
(VisDA-2017: `headline`), the printed summary line leads with it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import write_tiny_pacs
from dann import plugins
from dann.backbones import Backbone
from dann.cli import main
from dann.data import InputSpec
from dann.run import model_line, summary_line


class AlwaysFirst(nn.Module):
    """G_y that answers class 0 (dog) for every image: known accuracies on a known target."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([10.0] + [0.0] * (num_classes - 1)))

    def forward(self, features):
        return self.bias.expand(len(features), -1) + 0 * features[:, :1]


def always_first(num_classes: int, pretrained: str) -> Backbone:
    features = nn.Sequential(nn.AvgPool2d(16), nn.Flatten(), nn.Linear(3 * 14 * 14, 4))
    return Backbone(features=features, classifier=AlwaysFirst(num_classes), dim=4,
                    input=InputSpec(size=224, min_size=224), make_discriminator=lambda d: nn.Linear(d, 2))


def test_a_run_reports_the_mean_per_class_accuracy_with_a_known_answer(tmp_path, monkeypatch, one_thread):
    monkeypatch.setitem(plugins.BACKBONES, "always_first", always_first)
    data = write_tiny_pacs(tmp_path / "PACS", classes=("dog", "horse"), per_class=3)
    for image in sorted((data / "art_painting" / "horse").iterdir())[1:]:
        image.unlink()  # the target: 3 dogs, 1 horse
    out = tmp_path / "run"
    code = main("baseline", ["--cpu", "--backbone", "always_first", "--pretrained", "none", "--lr", "1e-6",
                             "--max_steps", "1", "--batch_size", "4", "--data_path", "tensor", "--num_workers", "1",
                             "--source_val", "0", "--select_rules", "none", "--no-tsne", "--data_root", str(data),
                             "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["confusion_matrix"] == [[3, 0], [1, 0]]
    assert results["target_acc"] == pytest.approx(3 / 4)  # every image counts the same
    assert results["target_mean_class_acc"] == pytest.approx((3 / 3 + 0 / 1) / 2)  # every class does
    assert results["target_mean_class_acc_std"] == 0 and results["runs"][0]["target_mean_class_acc"] == 0.5
    record = results["epochs"][-1]
    assert record["eval/target_mean_class_acc"] == 0.5 and record["eval/source_mean_class_acc"] == 0.5
    assert results["headline"] == "acc"


def test_the_summary_line_leads_with_the_figure_the_dataset_reports():
    runs = [{"target": "validation", "seed": s, "target_acc": a, "best_target_acc": a, "source_acc": 0.9,
             "target_mean_class_acc": m, "num_target_eval": 10} for s, a, m in ((0, 0.70, 0.60), (1, 0.80, 0.64))]
    summary = {"num_seeds": 2, "target_acc": 0.75, "target_acc_std": 0.0707, "target_mean_class_acc": 0.62,
               "target_mean_class_acc_std": 0.0283}
    line = summary_line(summary, Path("out"), "visda2017", headline="mean_class_acc")
    assert line == ("target_mean_class_acc=0.6200 +/- 0.0283 (mean per-class accuracy: the figure visda2017 "
                    "papers report) target_acc=0.7500 +/- 0.0707 -> out/results.json")
    assert summary_line({**summary, "num_seeds": 1}, Path("out"), "digits", headline="acc") == \
        "target_acc=0.7500 -> out/results.json"
    assert "target_mean_class_acc=0.6000" in model_line(runs[0])

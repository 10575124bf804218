"""The whole first homework from one command, at --scale tiny on a tiny PACS: stopped midway
by a SIGTERM to the runner's PID, started again, it redoes only the unfinished runs and
writes the report table."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, write_tiny_pacs
from train_helpers import clean_env

ROWS = ("3A", "3B", "4B", "4D", "3A-snd", "3B-snd", "upper")  # 3A-snd, 3B-snd: --selection snd


def runs_left(out: Path) -> list[int]:
    """The processes still running whose command names `out` (a run's names its folder)."""
    return [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline", "status"])
            if p.info["status"] != psutil.STATUS_ZOMBIE and any(str(out) in a for a in (p.info["cmdline"] or []))]


@pytest.mark.slow
def test_tiny_homework_stops_with_its_runs_restarts_and_reports(tmp_path):
    # 10 images a domain: the tiny scale's batch of 8 fits in the 9 the source trains on (--source_val holds one out)
    data = write_tiny_pacs(tmp_path / "PACS", domains=("photo", "art_painting", "cartoon", "sketch"), per_class=5)
    out = tmp_path / "homework"
    # Two runs at a time, so that the SIGTERM stops runs in flight side by side, as on a GPU. They
    # train LeNet: the stages, the restart and the report are the point, and two AlexNet trainings
    # at once hold 4 GB (AlexNet through train_dann.py: tests/test_train.py, on the real PACS).
    command = [sys.executable, str(ROOT / "sweep.py"), "homework", "--out", str(out), "--scale", "tiny",
               "--wandb", "off", "--selection", "snd", "--runs_per_gpu", "2", "--", f"--data_root={data}",
               "--backbone=lenet", f"--cache_dir={tmp_path / 'cache'}"]
    env = clean_env(tmp_path)
    runner = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while len(list(out.glob("sweeps/*/runs/*/results.json"))) < 2:
        assert time.time() < deadline and runner.poll() is None, runner.communicate()
        time.sleep(0.2)
    runner.send_signal(signal.SIGTERM)  # `kill PID`, as a user stops it
    _, stderr = runner.communicate(timeout=120)
    assert runner.returncode == 143 and stderr.strip().splitlines()[-1].startswith("stopped: SIGTERM"), stderr
    assert not runs_left(out), "a run outlived the runner"  # the runner waited for them: none is left, at once
    finished = {p: p.stat().st_mtime_ns for p in out.glob("sweeps/*/runs/*/results.json")}
    assert 2 <= len(finished) < 8

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skip ") == len(finished)
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items()), "a finished run was redone"
    table = (out / "report.md").read_text()
    for row in ROWS:
        assert f"| {row} |" in table, row
    assert "| art_painting -> art_painting |" in table  # the upper bound trained on the target
    upper = json.loads((out / "final" / "upper" / "results.json").read_text())
    assert upper["config"]["train_on"] == "target" and upper["seeds"] == [0, 1]
    chosen = json.loads((out / "final" / "4D" / "params.json").read_text())
    assert chosen["from"].startswith("4C: ")  # 4D's configuration came from the cross-domain sweep
    assert (out / "report.csv").read_text().count("\n") == 1 + len(ROWS)
    cells = {c[0]: c for c in ([c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()[2:])}
    assert cells["3B"][-1].startswith("oracle") and cells["4D"][-1].startswith("xdomain")
    assert cells["3B-snd"][-1] == "snd (higher is better)" and cells["upper"][-1] == ""  # the rule that chose it
    final = json.loads((Path(cells["3B-snd"][-2]) / "params.json").read_text())  # its final run (maybe 3B's)
    grid_run = out / "sweeps" / "3B" / "runs" / final["from"].removeprefix("3B: ")
    assert "select/snd" in json.loads((grid_run / "results.json").read_text())  # what the grid's runs recorded


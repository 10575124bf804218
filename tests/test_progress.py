"""--progress: a bar on a terminal, one line per epoch with its time and the ETA in a log (no
carriage returns), nothing with 'off'; TQDM_DISABLE=1 turns the bars off."""
from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
from train_helpers import QUICK, TINY_TRAIN, clean_env

from dann import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def chosen(monkeypatch):
    """set_mode, undone after the test (the mode is the process's)."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    before = progress._chosen["mode"]
    yield progress.set_mode
    progress.set_mode(before)


def test_auto_is_a_bar_on_a_terminal_and_lines_elsewhere(chosen, monkeypatch):
    chosen("auto")
    assert progress.mode(Terminal()) == "bar" and progress.mode(io.StringIO()) == "lines"
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress.mode(Terminal()) == "lines"
    chosen("bar")
    assert progress.mode(io.StringIO()) == "lines", "TQDM_DISABLE turns an asked-for bar off too"
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert progress.mode(io.StringIO()) == "bar"
    chosen("off")
    assert progress.mode(Terminal()) == "off"
    with pytest.raises(ValueError):
        chosen("loud")


def test_an_epoch_line_says_its_time_and_the_trainings_eta(chosen):
    chosen("lines")
    clock = progress.Clock()
    epoch = progress.EpochProgress(clock, epoch=2, epochs=10, step=100, end=100, start=0, last_step=1000, show=True)
    clock.started, clock.first_step = 1000.0, 0  # 100 steps (one epoch and its evaluation) took 30 s
    epoch.started = 1020.0
    epoch.update(100)
    assert epoch.line(1060.0) == "epoch 2/10: 100 steps in 40 s (400 ms/step); 1 min 0 s elapsed, ETA 4 min 0 s"
    epoch.step = 1000
    assert epoch.line(4000.0).endswith("; training took 50 min 0 s")
    assert [progress.duration(s) for s in (5, 65, 7325)] == ["5 s", "1 min 5 s", "2 h 2 min"]


def run_tiny(tmp_path, tiny_pacs, *flags, **env):
    """A 3-epoch tiny run with its output going to a file, as under a scheduler or `> log`."""
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, str(TINY_TRAIN), "dann", *QUICK, "--max_steps", "0",
                               "--iters_per_epoch", "2", "--epochs", "3", "--data_root", str(tiny_pacs),
                               "--cache_dir", str(tmp_path / "cache"), "--no-tsne", "--no-save_model",
                               "--output_dir", str(tmp_path / f"run{len(list(tmp_path.glob('run*')))}"), *flags],
                              stdout=f, stderr=subprocess.STDOUT, env=clean_env(tmp_path, **env), timeout=300)
    text = log.read_bytes().decode()  # as written: read_text would turn carriage returns into newlines
    assert done.returncode == 0, text[-3000:]
    return text


@pytest.mark.slow
def test_a_log_file_gets_one_line_per_epoch_and_no_carriage_returns(tiny_pacs, tmp_path):
    text = run_tiny(tmp_path, tiny_pacs)  # --progress auto, off a terminal
    assert "\r" not in text
    lines = [line for line in text.splitlines() if re.match(r"epoch \d/3: 2 steps in ", line)]
    assert len(lines) == 3, text
    assert all("elapsed, ETA" in line for line in lines[:2]) and "training took" in lines[2]

    bars = run_tiny(tmp_path, tiny_pacs, "--progress", "bar")  # asked for: tqdm draws into the file
    assert "\r" in bars
    assert "\r" not in run_tiny(tmp_path, tiny_pacs, "--progress", "bar", TQDM_DISABLE="1")
    quiet = run_tiny(tmp_path, tiny_pacs, "--progress", "off")
    assert "\r" not in quiet and not re.search(r"epoch \d/3: 2 steps", quiet)
    assert "epoch 3/3 step 6:" in quiet  # the evaluations still print

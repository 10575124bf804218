"""Faults (issue 28, docs/FAULTS.md): processes killed mid-work, full and unwritable disks, damaged
checkpoint files, failures that must not read as success. Each test reproduces one case and checks
what the product does: one line saying what and how to fix, a non-zero exit where something
failed, no process left behind, nothing already computed lost.

Runs that must be caught mid-work wait at a barrier (tests/tiny_train.py's TINY_HOLD_AT_STEP, or
a stand-in program's own), never for "long enough". Full disks are small tmpfs mounts (root only;
elsewhere skipped, saying why).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (see conftest)


def wait_for(condition, what: str, process: subprocess.Popen | None = None, timeout: float = 120) -> None:
    """Wait for a known state (the bound is for a hung test, not a timing)."""
    deadline = time.time() + timeout
    while not condition():
        assert process is None or process.poll() is None, f"the process ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ---------------------------------------------------------------------------- the runners' launcher

STOPS_SLOWLY = """import signal, sys, time
from pathlib import Path
folder, got = Path(sys.argv[1]), []
signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
(folder / "started").touch()
while not got:
    time.sleep(0.05)
(folder / "stopping").touch()
while not (folder / "release").exists():  # a checkpoint being written
    time.sleep(0.05)
print(f"stopped: SIGTERM ({len(got)} received)", file=sys.stderr, flush=True)
sys.exit(143)
"""


@pytest.mark.slow
def test_the_launcher_leaves_sigterm_to_the_training(tmp_path):
    """A sweep's `accelerate launch` gets the stop signal with its training (the runner signals the
    process group, Slurm every process of a job, sometimes twice): the training, still writing its
    checkpoint, is neither signalled again nor killed, and its last line reaches the log."""
    (tmp_path / "train.py").write_text(STOPS_SLOWLY)
    launcher = subprocess.Popen([sys.executable, "-m", "dann.experiments.launch", "--quiet", "--config_file",
                                 str(ROOT / "accelerate_config.yaml"), "train.py", str(tmp_path)],
                                cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                                stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (tmp_path / "started").exists(), "the training to start", launcher)
    os.killpg(launcher.pid, signal.SIGTERM)  # the runner stops the run
    wait_for(lambda: (tmp_path / "stopping").exists(), "the training to get its SIGTERM", launcher)
    os.kill(launcher.pid, signal.SIGTERM)  # Slurm's own signal to every process of the job
    (tmp_path / "release").touch()
    _, stderr = launcher.communicate(timeout=60)
    assert "stopped: SIGTERM (1 received)" in stderr, stderr

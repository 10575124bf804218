"""What a run says when it starts: one line with its processes, device, precision, global batch,
steps and output folder; and one warning when `accelerate launch` was asked for N processes but
started one (Accelerate's one-process launcher says nothing)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from train_helpers import QUICK, TINY_TRAIN, clean_env

from dann.run import asked_processes

SIMPLE_LAUNCHER = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_the_processes_asked_of_accelerates_one_process_launcher(tmp_path):
    launch = ["python", "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "train_dann.py"]
    assert asked_processes(SIMPLE_LAUNCHER, launch) == 2
    assert asked_processes(SIMPLE_LAUNCHER, [*launch[:4], "--num_processes=3", "train_dann.py"]) == 3
    assert asked_processes({**SIMPLE_LAUNCHER, "WORLD_SIZE": "2"}, launch) == 0  # the multi-process launcher ran
    assert asked_processes({"ACCELERATE_USE_CPU": "True"}, launch[:4]) == 0  # one process asked for: no MASTER_PORT
    assert asked_processes({"MASTER_PORT": "29500"}, launch) == 0  # not started by accelerate launch
    config = tmp_path / "accelerate.yaml"
    config.write_text("distributed_type: 'NO'\nnum_processes: 4\n")
    assert asked_processes(SIMPLE_LAUNCHER, ["accelerate", "launch", "--config_file", str(config), "x.py"]) == 4
    assert asked_processes(SIMPLE_LAUNCHER, ["bash"]) == 0


@pytest.mark.slow
def test_accelerate_launch_cpu_with_two_processes_warns_and_multi_gpu_runs_two(tiny_pacs, tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts one process: the run says so in one line.
    The form the README gives, `accelerate launch --multi_gpu --num_processes 2 train_dann.py --cpu`,
    starts two, and the start-up line says two."""
    # batch 2: two processes take 4 images a step, within the tiny domains' 5 training images
    flags = [*QUICK, "--batch_size", "2", "--data_root", str(tiny_pacs), "--cache_dir", str(tmp_path / "cache")]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]
    one = subprocess.run([*launch, "--cpu", "--num_processes", "2", str(TINY_TRAIN), "dann", *flags,
                          "--output_dir", str(tmp_path / "one")], capture_output=True, text=True,
                         env=clean_env(tmp_path), timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    warnings = [line for line in one.stderr.splitlines() if "asked for 2 processes" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: `accelerate launch` was asked for 2 processes "
                                                         "but started 1"), one.stderr[-3000:]
    assert "accelerate launch --multi_gpu --num_processes 2 train_dann.py --cpu" in warnings[0]
    assert f"start: 1 process on cpu, fp32, global batch 2 (2 per process), 3 steps per epoch, 1 step " \
           f"(--max_steps 1) -> {tmp_path / 'one'}" in one.stdout

    two = subprocess.run([*launch, "--multi_gpu", "--num_processes", "2", str(TINY_TRAIN), "dann", *flags,
                          "--output_dir", str(tmp_path / "two")], capture_output=True, text=True,
                         env=clean_env(tmp_path), timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "asked for" not in two.stderr
    assert "start: 2 processes on cpu, fp32, global batch 4 (2 per process)" in two.stdout

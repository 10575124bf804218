"""The real command line (`dann.cli.main`) with a tiny model in place of AlexNet, for fast tests.

    python tests/tiny_train.py dann --cpu --data_root ... --output_dir ...

A ~10k-parameter network with dropout (so that restoring RNG states matters), and hooks
set by environment variables: TINY_STEP_SLEEP (seconds per step, to catch a run
mid-training), TINY_SIGNAL_AT_STEP / TINY_SIGNAL (the process signals itself during that
step; with TINY_SIGNAL_RANK only that process of a multi-process run), TINY_NAN_AT_STEP (that step's loss is NaN).
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dann.train  # noqa: E402
from dann.cli import main  # noqa: E402
from dann.model import DANN  # noqa: E402


class TinyDANN(DANN):
    def __init__(self, num_classes: int, discriminator: bool = True):
        super().__init__()
        self.embed = nn.Sequential(nn.AvgPool2d(16), nn.Flatten(), nn.Linear(3 * 14 * 14, 16),
                                   nn.ReLU(), nn.Dropout(0.5))
        self.classifier = nn.Linear(16, num_classes)
        self.discriminator = nn.Linear(16, 2) if discriminator else None


def tiny_model(pretrained: str, num_classes: int = 7, discriminator: bool = True) -> TinyDANN:
    return TinyDANN(num_classes, discriminator)


def with_hooks(step_fn):
    """Wrap dann_step / baseline_step with the TINY_* hooks; calls are counted from 1."""
    calls = [0]

    def step(*args, **kwargs):
        calls[0] += 1
        loss, metrics = step_fn(*args, **kwargs)
        time.sleep(float(os.environ.get("TINY_STEP_SLEEP", 0)))
        signal_here = os.environ.get("TINY_SIGNAL_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0")
        if calls[0] == int(os.environ.get("TINY_SIGNAL_AT_STEP", -1)) and signal_here:
            os.kill(os.getpid(), getattr(signal, os.environ.get("TINY_SIGNAL", "SIGTERM")))
        if calls[0] == int(os.environ.get("TINY_NAN_AT_STEP", -1)):
            loss = loss * float("nan")
        return loss, metrics
    return step


def patch(module=dann.train) -> None:
    module.build_model = tiny_model
    module.dann_step = with_hooks(module.dann_step)
    module.baseline_step = with_hooks(module.baseline_step)


if __name__ == "__main__":
    patch()
    sys.exit(main(sys.argv[1], sys.argv[2:]))

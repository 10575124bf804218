"""The real command line (`dann.cli.main`) with a tiny backbone, for fast tests.

    python tests/tiny_train.py dann --backbone tiny --cpu --data_root ... --output_dir ...
    python tests/tiny_train.py baseline --backbone tiny ...

`register()` adds the plug-ins the way a user's own would be added: a ~10k-parameter
backbone "tiny" (with dropout, so that restoring RNG states matters), and every method
wrapped with hooks set by environment variables: TINY_HOLD_AT_STEP (the run holds at that
step, a barrier for tests that act on a run mid-training: see `hold`), TINY_SIGNAL_AT_STEP /
TINY_SIGNAL (the process signals itself during that step; with TINY_SIGNAL_RANK only that
process of a multi-process run), TINY_NAN_AT_STEP (that step's loss is NaN); TINY_DIGEST_DIR
(after each step, a method that owns its update writes the sum of its weights and buffers to
<dir>/rank<RANK>.txt: the processes of a run must hold one model). Steps are counted from 1 in
each process (reverse validation's steps follow training's).
TINY_HOLD_DECODE=1: every decode worker of a folder dataset holds before its chunk, writing
<cache_dir>/.held.<its pid> (to kill a run while it decodes).
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

HELD, RELEASE = ".tiny_held", ".tiny_release"  # the barrier's files in the run's --output_dir

from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dann import plugins  # noqa: E402
from dann.datasets import folder  # noqa: E402
from dann.backbones import Backbone  # noqa: E402
from dann.data import InputSpec  # noqa: E402
from dann.cli import script_main  # noqa: E402
from dann.methods.base import Method  # noqa: E402


def tiny_backbone(num_classes: int, pretrained: str) -> Backbone:
    features = nn.Sequential(nn.AvgPool2d(16), nn.Flatten(), nn.Linear(3 * 14 * 14, 16), nn.ReLU(), nn.Dropout(0.5))
    return Backbone(features=features, classifier=nn.Linear(16, num_classes), dim=16,
                    input=InputSpec(size=224, min_size=224), make_discriminator=lambda d: nn.Linear(d, 2))


def with_hooks(method_class):
    """A subclass of `method_class` whose step() (or update(), for a method that owns its
    updates) obeys the TINY_* variables."""
    calls = [0]

    def after_step() -> bool:
        """The hooks of one step; whether this step's loss is to be NaN."""
        calls[0] += 1
        if calls[0] == int(os.environ.get("TINY_HOLD_AT_STEP", -1)):
            hold(calls[0])
        rank = os.environ.get("RANK", "0")
        if calls[0] == int(os.environ.get("TINY_SIGNAL_AT_STEP", -1)) \
                and os.environ.get("TINY_SIGNAL_RANK", rank) == rank:
            os.kill(os.getpid(), getattr(signal, os.environ.get("TINY_SIGNAL", "SIGTERM")))
        return calls[0] == int(os.environ.get("TINY_NAN_AT_STEP", -1))

    class Hooked(method_class):
        def step(self, x_s, y_s, x_t, progress):
            loss, metrics = super().step(x_s, y_s, x_t, progress)
            if after_step():
                loss = loss * float("nan")
            return loss, metrics

    class HookedUpdate(method_class):
        def update(self, x_s, y_s, x_t, progress, optimize):
            nan = after_step()

            def optimize_with_hooks(loss, parameters=None):
                optimize(loss * float("nan") if nan else loss, parameters)
            optimize_with_hooks.target_index = optimize.target_index
            metrics = super().update(x_s, y_s, x_t, progress, optimize_with_hooks)
            if os.environ.get("TINY_DIGEST_DIR"):
                state = [t.double().sum().item() for t in self.state_dict().values() if t.is_floating_point()]
                Path(os.environ["TINY_DIGEST_DIR"], f"rank{os.environ.get('RANK', '0')}.txt").write_text(
                    " ".join(f"{v:.10e}" for v in state))
            return metrics
    return HookedUpdate if method_class.update is not Method.update else Hooked


def output_dir() -> Path:
    """The run's --output_dir, from the command line."""
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg.startswith("--output_dir="):
            return Path(arg.split("=", 1)[1])
        if arg == "--output_dir":
            return Path(args[i + 1])
    raise SystemExit("TINY_HOLD_AT_STEP needs --output_dir")


def hold(step: int) -> None:
    """A test's barrier: write <output_dir>/.tiny_held (the step), then wait until the test writes
    <output_dir>/.tiny_release or a stop signal reaches the run (the scripts' StopOnSignal holds
    it). A run that finds .tiny_held from an earlier start (a resumed run) goes on at once."""
    folder = output_dir()
    if (folder / HELD).exists():
        return
    (folder / HELD).write_text(str(step))
    stop = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)  # dann.signals.StopOnSignal
    while not (folder / RELEASE).exists() and getattr(stop, "signum", None) is None:
        time.sleep(0.05)


decode_chunk = folder._decode_chunk


def held_decode_chunk(npy_file, *args):
    """folder._decode_chunk, writing into the cache, after a hold until its marker is deleted (the
    test kills the run meanwhile). Module-level, so that the process pool can send it to its workers."""
    if npy_file is not None:
        marker = Path(npy_file).parent / f".held.{os.getpid()}"
        marker.touch()
        while marker.exists():
            time.sleep(0.05)
    return decode_chunk(npy_file, *args)


def register(monkeypatch=None) -> None:
    """The tiny backbone and hooked methods in the registries (undone by `monkeypatch`, if given)."""
    set_item = monkeypatch.setitem if monkeypatch else dict.__setitem__
    if os.environ.get("TINY_HOLD_DECODE") == "1":
        folder._decode_chunk = held_decode_chunk
    set_item(plugins.BACKBONES, "tiny", tiny_backbone)
    for name in list(plugins.METHODS):
        hooked = with_hooks(plugins.load(plugins.METHODS, name))
        set_item(plugins.METHODS, name, plugins.entry(plugins.METHODS, name)._replace(target=hooked))


if __name__ == "__main__":
    register()
    script = sys.argv.pop(1)  # dann | baseline, then the flags
    sys.exit(script_main(script))

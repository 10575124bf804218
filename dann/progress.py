"""How a run shows its progress (--progress): a tqdm bar on a terminal, one line per epoch
with its time and the training's ETA where the output goes to a file (a log then holds no
carriage-return fragments), or nothing. TQDM_DISABLE=1 turns the bars off, as in any tqdm
program. The run sets the mode once per process (`set_mode`); the training loop's epochs
(`epoch`) and the evaluation passes (`bar`) read it.
"""
from __future__ import annotations

import os
import sys
import time

MODES = ("auto", "bar", "lines", "off")
_chosen = {"mode": "auto"}


def set_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r} is not one of {', '.join(MODES)}")
    _chosen["mode"] = mode


def tqdm_disabled() -> bool:
    """TQDM_DISABLE set to anything but empty, 0 or false."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def mode(stream=None) -> str:
    """'bar', 'lines' or 'off': the chosen mode, 'auto' resolved for `stream` (default stderr,
    where tqdm draws): a bar on a terminal, lines otherwise; a bar under TQDM_DISABLE is lines."""
    chosen = _chosen["mode"]
    if chosen == "auto":
        stream = sys.stderr if stream is None else stream
        chosen = "bar" if getattr(stream, "isatty", lambda: False)() else "lines"
    return "lines" if chosen == "bar" and tqdm_disabled() else chosen


def bar(iterable, *, total: int, desc: str, show: bool):
    """`iterable` with a transient tqdm bar in bar mode (tqdm's pass-through otherwise)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True,
                disable=not (show and mode() == "bar"))


def duration(seconds: float) -> str:
    """'42 s', '3 min 5 s', '2 h 14 min'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class Clock:
    """When a training (one `fit`) started, and from which step: what the ETA is measured on
    (evaluations included, as they recur)."""

    def __init__(self):
        self.started, self.first_step = time.time(), None


class EpochProgress:
    """One epoch's progress: a tqdm bar in bar mode; in bar and lines modes, a line when the
    epoch ends: its steps, time, time per step, and the training's elapsed time and ETA."""

    def __init__(self, clock: Clock, *, epoch: int, epochs: int, step: int, end: int, start: int,
                 last_step: int, show: bool):
        from tqdm.auto import tqdm

        self.clock, self.epoch, self.epochs, self.last_step = clock, epoch, epochs, last_step
        self.step, self.show, self.started = step, show and mode() != "off", time.time()
        if clock.first_step is None:
            clock.first_step = step
        self.first = step
        self.bar = tqdm(total=end, initial=start, desc=f"epoch {epoch}/{epochs}", leave=False, dynamic_ncols=True,
                        disable=not (self.show and mode() == "bar"))

    def update(self, n: int = 1) -> None:
        self.step += n
        self.bar.update(n)

    def set_postfix(self, values: dict) -> None:
        self.bar.set_postfix(values)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.bar.close()  # before anything else prints
        if kind is None and self.show and self.step > self.first:
            print(self.line(time.time()), flush=True)

    def line(self, now: float) -> str:
        steps, seconds = self.step - self.first, now - self.started
        elapsed, done = now - self.clock.started, self.step - self.clock.first_step
        left = self.last_step - self.step
        tail = (f"{duration(elapsed)} elapsed, ETA {duration(elapsed / done * left)}" if left > 0
                else f"training took {duration(elapsed)}")
        return (f"epoch {self.epoch}/{self.epochs}: {steps} step{'s' * (steps != 1)} in {duration(seconds)} "
                f"({1000 * seconds / steps:.0f} ms/step); {tail}")

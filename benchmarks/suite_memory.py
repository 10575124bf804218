"""The test suite's wall time and peak memory, in all and per test (the README's figures).

    python benchmarks/suite_memory.py -n 2             # the README's test command, measured
    python benchmarks/suite_memory.py -m "not slow"    # the quick loop (any pytest arguments)

pytest runs in this process. Every 0.2 s a thread sums the proportional set size (PSS: a page
that N processes share counts 1/N, so torch's libraries loaded by five processes count once)
of this process, every process it started and every Slurm job (slurmstepd and its children,
which Slurm starts outside this process tree), and keeps the largest single process's RSS
(what `/usr/bin/time -v` calls the maximum resident set size). Prints both peaks, the tests
where they were reached and the heaviest tests, and writes all of it to --json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

GiB = 2**30


def processes() -> list[psutil.Process]:
    """This process, its descendants and every Slurm job step with its descendants."""
    me = psutil.Process()
    found = {p.pid: p for p in [me, *me.children(recursive=True)]}
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == "slurmstepd":
            with_children = [p]
            try:
                with_children += p.children(recursive=True)
            except psutil.Error:
                pass
            found.update((q.pid, q) for q in with_children)
    return list(found.values())


def sample() -> tuple[int, int]:
    """(summed PSS, largest RSS) in bytes, now."""
    pss = largest = 0
    for p in processes():
        try:
            info = p.memory_full_info()
        except psutil.Error:  # gone since listed, or not ours to read
            continue
        pss += info.pss
        largest = max(largest, info.rss)
    return pss, largest


class Sampler:
    """A pytest plugin: the peaks of `sample()` per test, from a background thread. A sample
    counts for every test running when it was taken: one at a time, or one per pytest-xdist
    worker (`-n 2`: the controller hears each worker's test start and finish)."""

    def __init__(self, every: float = 0.2):
        self.every, self.done = every, False
        self.running: set[str] = set()
        self.peaks: dict[str, list[int]] = {}  # test -> [summed PSS, largest RSS]
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.done:
            pss, rss = sample()
            for test in list(self.running) or ["(no test running)"]:
                peak = self.peaks.setdefault(test, [0, 0])
                peak[0], peak[1] = max(peak[0], pss), max(peak[1], rss)
            time.sleep(self.every)

    def pytest_runtest_logstart(self, nodeid, location):
        self.running.add(nodeid)

    def pytest_runtest_logfinish(self, nodeid, location):
        self.running.discard(nodeid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default="runs/suite_memory.json", help="where the figures go")
    parser.add_argument("--top", type=int, default=15, help="how many of the heaviest tests to print")
    args, pytest_args = parser.parse_known_args(argv)
    sampler = Sampler()
    start = time.time()
    sampler.thread.start()
    code = pytest.main(["-q", *pytest_args], plugins=[sampler])
    sampler.done = True
    sampler.thread.join()
    wall = time.time() - start
    peaks = sorted(sampler.peaks.items(), key=lambda kv: -kv[1][0])
    top_rss = max(peaks, key=lambda kv: kv[1][1])
    print(f"\nsuite: exit {code}, {wall / 60:.1f} min, {os.cpu_count()} CPUs, "
          f"peak summed PSS {peaks[0][1][0] / GiB:.2f} GiB ({peaks[0][0]}), "
          f"largest process RSS {top_rss[1][1] / GiB:.2f} GiB ({top_rss[0]})")
    print("heaviest tests (summed PSS, largest RSS, GiB):")
    for test, (pss, rss) in peaks[:args.top]:
        print(f"  {pss / GiB:5.2f} {rss / GiB:5.2f}  {test}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["pytest", "-q", *pytest_args]), "exit": int(code),
                               "wall_s": wall, "cpus": os.cpu_count(),
                               "tests": {t: {"pss": p, "rss": r} for t, (p, r) in peaks}}, indent=1))
    print(f"all tests: {out}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())

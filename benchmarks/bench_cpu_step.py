"""Milliseconds per training step of the digits table's DANN (chosen) on this CPU, one thread:
fp32 and bf16 autocast, channels_last off and on, optionally torch.compile, and a profile of
where an fp32 step goes (docs/BENCHMARKS.md, "The digits table on the 2-core CPU").

    python benchmarks/bench_cpu_step.py                # the four precision x layout cases
    python benchmarks/bench_cpu_step.py --compile      # and the compiled ones (30-60 s each to compile)
    python benchmarks/bench_cpu_step.py --profile      # and the operators of an fp32 step

The project's own model (lenet_bn, the 1024-wide batch-norm G_d, `Method.step`) on random
32x32 images, 64 source + 64 target, SGD with Nesterov; each case alternates with the others
twice, so a busy machine slows all of them alike.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dann import methods  # noqa: E402
from dann.config import make_config  # noqa: E402
from dann.optim import make_optimizer  # noqa: E402
from dann.run import cpu_has_native_bf16  # noqa: E402


def build(channels_last: bool, compile_it: bool):
    config = make_config(method="dann", backbone="lenet_bn", pretrained="none", lr=0.01)
    model = methods.build(config, num_classes=10)
    model.setup(None, total_steps=500)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    step = torch.compile(model.step) if compile_it else model.step
    return step, optimizer


def batches(channels_last: bool):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x_s = torch.rand(64, 3, 32, 32).contiguous(memory_format=fmt)
    x_t = torch.rand(64, 3, 32, 32).contiguous(memory_format=fmt)
    return x_s, torch.randint(0, 10, (64,)), x_t


def one_step(step, optimizer, x_s, y_s, x_t, bf16: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss, _ = step(x_s, y_s, x_t, 0.5)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def ms_per_step(case: dict, steps: int) -> tuple[float, float]:
    """(ms per step, seconds to the first steps' end: building and compiling included)."""
    start = time.perf_counter()
    step, optimizer = build(case["channels_last"], case["compile"])
    x_s, y_s, x_t = batches(case["channels_last"])
    for _ in range(5):
        one_step(step, optimizer, x_s, y_s, x_t, case["bf16"])
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        one_step(step, optimizer, x_s, y_s, x_t, case["bf16"])
    return 1000 * (time.perf_counter() - start) / steps, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per case")
    parser.add_argument("--compile", action="store_true", help="also the torch.compile'd cases")
    parser.add_argument("--profile", action="store_true", help="also the operators of 20 fp32 steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, AMX: {'yes' if cpu_has_native_bf16() else 'no'}")
    cases = [dict(bf16=bf16, channels_last=cl, compile=False) for bf16 in (False, True) for cl in (False, True)]
    cases += [dict(bf16=bf16, channels_last=True, compile=True) for bf16 in (False, True)] if args.compile else []
    results = {i: [] for i in range(len(cases))}
    for _ in range(2):
        for i, case in enumerate(cases):
            results[i].append(ms_per_step(case, args.steps))
    print("| precision | channels_last | compile | ms per step (2 tries) | s to build + 5 steps |")
    print("|---|---|---|---|---|")
    for i, case in enumerate(cases):
        ms = " / ".join(f"{m:.1f}" for m, _ in results[i])
        print(f"| {'bf16' if case['bf16'] else 'fp32'} | {'on' if case['channels_last'] else 'off'} "
              f"| {'yes' if case['compile'] else 'no'} | {ms} | {results[i][0][1]:.1f} |")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        step, optimizer = build(True, False)
        x_s, y_s, x_t = batches(True)
        one_step(step, optimizer, x_s, y_s, x_t, False)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                one_step(step, optimizer, x_s, y_s, x_t, False)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()

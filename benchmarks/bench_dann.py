"""Speed of the first homework's DANN on PACS (photo -> art_painting, --recipe homework): the two
data paths against the GPU floor, the step with and without a host sync, and K concurrent runs on
one GPU.

    python benchmarks/bench_dann.py --data_root ../shared/data/PACS    # full (an H100: ~5 min)
    python benchmarks/bench_dann.py --data_root ../shared/data/PACS --homework   # + the whole homework
    python benchmarks/bench_dann.py --tiny                            # CPU smoke run (CI, ~1 min)

Cases, all through the project's own code (`datasets.load_splits`, `methods.build`, `fit`):
(a) DataLoader path, batch 64, fp32; (b) tensor path, same settings; (c) tensor path at the
default settings (bf16 + channels_last on GPUs); floor: the DANN step + backward + SGD step on
batches already on the device, settings of (c); sync: the floor's step as fit runs it (no host
sync) and with the former per-step sync (a non-finite check read on the host every step).
Also timed: the first decode of all four domains (cold cache), a whole `train_dann.py` run with
a warm cache (with and without --compile on CUDA), K = 1, 2, 4 such runs at once on one device
(aggregate images/s), and with --homework `sweep.py homework` at full scale.
Prints a Markdown table and writes it, with every number, to <out>/bench_dann.json.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from accelerate.state import AcceleratorState  # noqa: E402
from accelerate.utils import set_seed  # noqa: E402
from PIL import Image  # noqa: E402

from dann import datasets, methods  # noqa: E402
from dann.config import TrainConfig, make_config  # noqa: E402
from dann.datasets import folder as pacs  # noqa: E402
from dann.datasets.pacs import DOMAINS  # noqa: E402
from dann.run import make_accelerator, use_channels_last  # noqa: E402
from dann.optim import make_optimizer  # noqa: E402
from dann.train import NonFiniteGuard, fit  # noqa: E402

TARGETS = {"b_vs_a": 20.0, "c_vs_floor": 1.5, "full_run_s": 10.0, "decode_s": 5.0, "homework_min": 20.0}


# ---------------------------------------------------------------------------- measuring

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory while the block runs: allocated CUDA memory on a GPU, else the process RSS."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def _poll(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, process.memory_info().rss)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, psutil.Process().memory_info().rss)


class Timed:
    """A domain that notes when `fit` starts an epoch's training (train=True) or the epoch's
    evaluation (train=False); everything else is the wrapped domain's."""

    def __init__(self, domain, marks: list, device: torch.device, train: bool):
        self.domain, self.marks, self.device, self.train = domain, marks, device, train

    def __getattr__(self, name):
        return getattr(self.domain, name)

    def _mark(self, kind: str) -> None:
        sync(self.device)
        self.marks.append((kind, time.perf_counter()))

    def train_batches(self, epoch: int, start: int = 0, *args):
        if self.train:
            self._mark("train")
        yield from self.domain.train_batches(epoch, start, *args)

    def batches_of(self, index):
        if not self.train:  # fit evaluates the target first (one pass, dann/outputs.py), then the source
            self._mark("eval")
        yield from self.domain.batches_of(index)


def fresh_accelerator(config: TrainConfig):
    """make_accelerator, after forgetting the previous case's (per-process) Accelerate state."""
    AcceleratorState._reset_state(reset_partial_state=True)
    return make_accelerator(config)


def build(config: TrainConfig, accelerator):
    """What `dann.run` builds from flags: the method (seeded) and the split, on this device."""
    set_seed(config.seed)
    dataset = datasets.build(config)
    datasets.check_domains(dataset, config)
    model = methods.build(config, len(dataset.classes([config.source, config.target])))
    channels_last = use_channels_last(config, accelerator.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    splits, info = datasets.load_splits(dataset, config, model.input_spec, device=accelerator.device, rank=0,
                                        world=1, channels_last=channels_last, workers=config.num_workers)
    return model, splits[config.target], info["data_path"], channels_last


def train_case(config: TrainConfig, warmup: int, log) -> dict:
    """Train DANN as `run` does and time every epoch after the first `warmup` ones."""
    accelerator = fresh_accelerator(config)
    device = accelerator.device
    with PeakMemory(device) as memory:
        model, split, data_path, channels_last = build(config, accelerator)
        marks = []
        source = Timed(split.train, marks, device, train=True)
        target = Timed(split.test, marks, device, train=False)
        timed = dataclasses.replace(split, train=source, test=target, target=split.target)
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):  # epoch lines, tqdm
            model, results = fit(config, model, accelerator, timed)
        sync(device)
        marks.append(("train", time.perf_counter()))  # the end of the last epoch
    starts = [t for kind, t in marks if kind == "train"]
    evals = [t for kind, t in marks if kind == "eval"]
    epoch_s = np.diff(starts)[warmup:]
    train_s = (np.array(evals) - np.array(starts[:-1]))[warmup:]
    steps = source.steps_per_epoch()
    images = 2 * config.batch_size * steps  # source + target images per epoch
    del results, model, split, source, target, timed
    accelerator.free_memory()
    return {"data_path": data_path, "mixed_precision": accelerator.mixed_precision,
            "channels_last": channels_last, "compile": config.compile,
            "batch_size": config.batch_size, "steps_per_epoch": steps,
            "s_per_epoch": float(np.median(epoch_s)), "train_s_per_epoch": float(np.median(train_s)),
            "images_per_s": images / float(np.median(train_s)), "peak_memory": memory.peak}


def floor_case(config: TrainConfig, steps_per_epoch: int, eval_images: int, warmup: int, steps: int) -> dict:
    """The DANN step on batches already on the device: no decode, no crop, no index.

    Its epoch is `steps_per_epoch` steps plus a forward pass over `eval_images`, the work of
    one `fit` epoch; the same Accelerate preparation (autocast, channels_last), fused SGD
    and NonFiniteGuard as `fit`. Also returns the step's speed with the former per-step host
    sync (the non-finite flag read on the host after every step), for the sync case.
    """
    accelerator = fresh_accelerator(config)
    device = accelerator.device
    set_seed(config.seed)
    channels_last = use_channels_last(config, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    with PeakMemory(device) as memory:
        model = methods.build(config, 7).to(memory_format=memory_format)
        optimizer = make_optimizer(model, config)
        model, optimizer = accelerator.prepare(model, optimizer)
        guard = NonFiniteGuard(accelerator, optimizer, 0)
        b = config.batch_size
        x_s, x_t = (torch.randn(b, 3, 224, 224, device=device).contiguous(memory_format=memory_format)
                    for _ in range(2))
        y_s = torch.randint(0, 7, (b,), device=device)

        def step(host_sync: bool):
            loss, _ = model(x_s, y_s, x_t, 0.5)
            guard.check(loss)
            if host_sync:  # what the loop did before: read the flag on the host every step
                guard.raise_if_bad()
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            guard.before_step(model.parameters())
            optimizer.step()

        def steps_per_second(host_sync: bool) -> float:
            for _ in range(warmup):
                step(host_sync)
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                step(host_sync)
            sync(device)
            return steps / (time.perf_counter() - start)

        no_sync, with_sync = steps_per_second(False), steps_per_second(True)
        model.eval()
        with torch.no_grad():
            for _ in range(warmup):
                model(x_s).argmax(1)
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                model(x_s).argmax(1)
            sync(device)
        eval_batch_s = (time.perf_counter() - start) / steps
    accelerator.free_memory()  # the prepared model and optimizer; the rest goes with this frame
    eval_s = -(-eval_images // b) * eval_batch_s
    return {"mixed_precision": accelerator.mixed_precision, "channels_last": channels_last,
            "batch_size": b, "steps_per_epoch": steps_per_epoch,
            "s_per_epoch": steps_per_epoch / no_sync + eval_s, "train_s_per_epoch": steps_per_epoch / no_sync,
            "images_per_s": 2 * b * no_sync, "peak_memory": memory.peak,
            "steps_per_s": no_sync, "steps_per_s_host_sync": with_sync}


def decode_case(data_root: Path, cache_dir: Path, workers: int) -> dict:
    """The first decode of all four domains into an empty cache, with `workers` processes."""
    start = time.perf_counter()
    images = 0
    for name in DOMAINS:
        files = pacs.list_domain(data_root, name)
        images += len(pacs.decode_domain(files, cache_dir, workers)[0])
    seconds = time.perf_counter() - start
    return {"images": images, "workers": workers, "seconds": seconds, "images_per_s": images / seconds}


def full_run_case(args, cache_dir: Path, out: Path, compile: bool) -> dict:
    """`python train_dann.py ...` for --full_epochs with a warm cache, timed from outside."""
    output_dir = out / f"full_run{'_compile' if compile else ''}"
    command = [sys.executable, str(ROOT / "train_dann.py"), "--data_root", str(args.data_root),
               "--cache_dir", str(cache_dir), "--source", args.source, "--target", args.target,
               "--recipe", "homework", "--pretrained", "none", "--epochs", str(args.full_epochs),
               "--output_dir", str(output_dir), "--compile" if compile else "--no-compile"]
    if args.tiny:  # 2 images a domain: none held out for source validation, or a batch would not fit
        command += ["--batch_size", str(args.batch_size), "--source_val", "0"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (out / f"{output_dir.name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"the full run failed (exit {done.returncode}); see {out / output_dir.name}.log")
    results = json.loads((output_dir / "results.json").read_text())
    return {"command": " ".join(command[1:]), "epochs": args.full_epochs, "compile": compile,
            "wall_s": wall, "run_wall_s": results["wall_seconds"], "train_s": results["train_seconds"],
            "data_path": results["data_path"], "mixed_precision": results["mixed_precision"],
            "target_acc": results["target_acc"]}


def concurrent_case(args, cache_dir: Path, out: Path, k: int) -> dict:
    """K `train_dann.py` runs started together on this one device (as `sweep.py --runs_per_gpu K`
    places them): aggregate training images per second over the wall time of all K."""
    commands, folders = [], []
    for i in range(k):
        folder = out / f"concurrent_{k}" / f"run{i}"
        folders.append(folder)
        commands.append([sys.executable, str(ROOT / "train_dann.py"), "--data_root", str(args.data_root),
                         "--cache_dir", str(cache_dir), "--source", args.source, "--target", args.target,
                         "--recipe", "homework", "--pretrained", "none", "--epochs", str(args.concurrent_epochs),
                         "--no-tsne", "--batch_size", str(args.batch_size), "--seed", str(i), "--output_dir", str(folder),
                         "--backbone", args.concurrent_backbone] + (["--source_val", "0"] if args.tiny else []))
    start = time.perf_counter()
    processes = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in commands]
    errors = [p.communicate()[1] for p in processes]
    wall = time.perf_counter() - start
    if any(p.returncode for p in processes):
        raise SystemExit(f"a concurrent run failed: {next(e for p, e in zip(processes, errors) if p.returncode)[-2000:]}")
    results = [json.loads((f / "results.json").read_text()) for f in folders]
    images = sum(2 * r["per_process_batch"] * r["steps"] for r in results)
    return {"k": k, "backbone": args.concurrent_backbone, "epochs": args.concurrent_epochs, "wall_s": wall,
            "images": images, "images_per_s": images / wall, "train_s": [r["train_seconds"] for r in results]}


def homework_case(out: Path, data_root: Path, cache_dir: Path) -> dict:
    """`sweep.py homework` at full scale on every visible GPU, timed from outside."""
    command = [sys.executable, str(ROOT / "sweep.py"), "homework", "--out", str(out / "homework"), "--wandb", "off",
               "--", f"--data_root={data_root}", f"--cache_dir={cache_dir}", "--pretrained=none"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (out / "homework.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"the homework failed (exit {done.returncode}); see {out / 'homework.log'}")
    return {"command": " ".join(command[1:]), "wall_s": wall}


# ---------------------------------------------------------------------------- reporting

def table(report: dict) -> str:
    cases, tiny = report["cases"], report["tiny"]
    memory_kind = "peak CUDA memory" if report["device"].startswith("cuda") else "peak RSS"
    rows = [f"| case | path | precision | channels_last | compile | batch | images/s | s/epoch "
            f"| train s/epoch | {memory_kind} |", "|" + "---|" * 10]
    for name, c in cases.items():
        rows.append(f"| {name} | {c.get('data_path', 'on device')} | {c['mixed_precision']} "
                    f"| {c['channels_last']} | {c.get('compile', False)} | {c['batch_size']} "
                    f"| {c['images_per_s']:,.0f} | {c['s_per_epoch']:.3f} | {c['train_s_per_epoch']:.3f} "
                    f"| {c['peak_memory'] / 2**20:,.0f} MiB |")
    floor = cases["floor"]
    rows += ["", "| step (floor's batches) | steps/s |", "|---|---|",
             f"| as fit runs it: no host sync, non-finite loss skipped on the device | {floor['steps_per_s']:,.1f} |",
             f"| with the former per-step host sync | {floor['steps_per_s_host_sync']:,.1f} |"]
    if report["concurrent"]:
        first = report["concurrent"][0]
        rows += ["", f"| concurrent {first['epochs']}-epoch {first['backbone']} runs on one device | wall s "
                     f"| aggregate images/s |", "|---|---|---|"]
        rows += [f"| K = {c['k']} | {c['wall_s']:.1f} | {c['images_per_s']:,.0f} |" for c in report["concurrent"]]
    rows += ["", "| measure | value | target | met |", "|---|---|---|---|"]
    for r in report["checks"]:
        met = "yes" if r["met"] else "no"
        rows.append(f"| {r['name']} | {r['value']} | {r['target']} | {met}{' (tiny run: not judged)' if tiny else ''} |")
    return "\n".join(rows)


def checks(report: dict) -> list[dict]:
    cases, out = report["cases"], []
    a, b, c, floor = (cases[k] for k in ("a", "b", "c", "floor"))
    speedup = a["s_per_epoch"] / b["s_per_epoch"]
    out.append({"name": "(b) vs (a): s/epoch speed-up", "value": f"{speedup:.1f}x",
                "target": f">= {TARGETS['b_vs_a']:.0f}x", "met": speedup >= TARGETS["b_vs_a"]})
    gap = floor["images_per_s"] / c["images_per_s"]
    out.append({"name": "(c) vs floor: images/s gap", "value": f"{gap:.2f}x",
                "target": f"<= {TARGETS['c_vs_floor']}x", "met": gap <= TARGETS["c_vs_floor"]})
    epoch_gap = c["s_per_epoch"] / floor["s_per_epoch"]
    out.append({"name": "(c) vs floor: s/epoch gap (with evaluation)", "value": f"{epoch_gap:.2f}x",
                "target": f"<= {TARGETS['c_vs_floor']}x", "met": epoch_gap <= TARGETS["c_vs_floor"]})
    d = report["decode"]
    out.append({"name": f"first decode, 4 domains, {d['workers']} processes",
                "value": f"{d['seconds']:.2f} s ({d['images_per_s']:,.0f} images/s)",
                "target": f"< {TARGETS['decode_s']:.0f} s", "met": d["seconds"] < TARGETS["decode_s"]})
    if report.get("homework"):
        h = report["homework"]
        out.append({"name": "sweep.py homework, full scale (wall)", "value": f"{h['wall_s'] / 60:.1f} min",
                    "target": f"< {TARGETS['homework_min']:.0f} min", "met": h["wall_s"] / 60 < TARGETS["homework_min"]})
    for run in report["full_runs"]:
        out.append({"name": f"{run['epochs']}-epoch train_dann.py, warm cache"
                            f"{', --compile' if run['compile'] else ''} (wall, process start included)",
                    "value": f"{run['wall_s']:.1f} s (train+eval {run['train_s']:.1f} s)",
                    "target": f"< {TARGETS['full_run_s']:.0f} s", "met": run["wall_s"] < TARGETS["full_run_s"]})
    return out


# ---------------------------------------------------------------------------- main

def write_tiny_pacs(root: Path, per_class: int, size: int = 48) -> Path:
    """Four PACS-shaped domains of random 48x48 images in 2 classes."""
    rng = np.random.default_rng(0)
    for d in DOMAINS:
        for c in ("dog", "horse"):
            (root / d / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / d / c / f"{i}.{'png' if d == 'sketch' else 'jpg'}")
    return root


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_root", default=str(ROOT.parent / "shared" / "data" / "PACS"))
    parser.add_argument("--out", default="", help="results folder (default runs/bench-<time>)")
    parser.add_argument("--source", default="photo")
    parser.add_argument("--target", default="art_painting")
    parser.add_argument("--tiny", action="store_true",
                        help="CPU smoke run: generated 48px data, batch 2, 1 epoch of 1 step, no timing claims")
    parser.add_argument("--batch_size", type=int, default=64, help="batch of (a), (b), (c)")
    parser.add_argument("--large_batch", type=int, default=256,
                        help="also time (c) and the floor at this batch (0: skip)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per case")
    parser.add_argument("--warmup_epochs", type=int, default=1, help="untimed epochs first")
    parser.add_argument("--floor_steps", type=int, default=50, help="timed steps of the floor")
    parser.add_argument("--floor_warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--loader_workers", type=int, default=4, help="DataLoader workers of (a)")
    parser.add_argument("--decode_workers", type=int, default=os.cpu_count())
    parser.add_argument("--full_epochs", type=int, default=30)
    parser.add_argument("--full_run", action=argparse.BooleanOptionalAction, default=True,
                        help="time a whole train_dann.py run (and one with --compile on CUDA)")
    parser.add_argument("--concurrent", default="1,2,4", help="K values: K train_dann.py runs at once ('': skip)")
    parser.add_argument("--concurrent_epochs", type=int, default=5, help="epochs of each concurrent run")
    parser.add_argument("--concurrent_backbone", default="alexnet",
                        help="backbone of the concurrent runs (--tiny: resnet18; two AlexNets at once hold 4 GB)")
    parser.add_argument("--homework", action="store_true",
                        help="also time `sweep.py homework` at full scale (about 20 minutes on an H100)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    out = Path(args.out or f"runs/bench-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        # One step per epoch (2 images per domain, batch 2): AlexNet's step costs seconds on a CPU.
        args.data_root = str(write_tiny_pacs(out / "tiny_pacs", per_class=1))
        args.batch_size, args.large_batch, args.epochs, args.warmup_epochs = 2, 0, 1, 0
        args.floor_steps, args.floor_warmup, args.full_epochs, args.loader_workers = 1, 0, 1, 2
        args.decode_workers, args.concurrent, args.concurrent_epochs = min(args.decode_workers, 2), "1,2", 1
        args.concurrent_backbone = "resnet18"  # the K-runs path on a CPU in little memory: not a speed claim
    data_root = Path(args.data_root)
    cache_dir = out / "decode_cache"
    shutil.rmtree(cache_dir, ignore_errors=True)  # empty: the decode below is a first decode
    cuda = torch.cuda.is_available()
    report = {"command": " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else argv)),
              "tiny": args.tiny, "device": torch.cuda.get_device_name() if cuda else "cpu",
              "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
              "cases": {}, "full_runs": [], "concurrent": []}
    if cuda:
        report["device"] = f"cuda: {report['device']}"
    print(f"benchmark: {report['device']}, {os.cpu_count()} CPUs, torch {torch.__version__} -> {out}",
          file=sys.stderr)

    report["decode"] = decode_case(data_root, cache_dir, args.decode_workers)
    base = dict(recipe="homework", source=args.source, target=args.target, data_root=str(data_root),
                cache_dir=str(cache_dir), pretrained="none", epochs=args.warmup_epochs + args.epochs, report_to="none",
                num_workers=args.loader_workers, batch_size=args.batch_size, tsne=False)
    fp32 = dict(mixed_precision="no", channels_last="off", compile=False)
    settings = {"a": dict(data_path="loader", **fp32), "b": dict(data_path="tensor", **fp32), "c": {}}
    if args.large_batch:
        settings[f"c@{args.large_batch}"] = dict(batch_size=args.large_batch)
    if cuda:
        settings["c+compile"] = dict(compile=True)
    with open(out / "fit.log", "w") as log:
        for name, overrides in settings.items():
            print(f"case {name} ...", file=sys.stderr)
            report["cases"][name] = train_case(make_config(**{**base, **overrides}), args.warmup_epochs, log)
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
    eval_images = sum(len(pacs.list_domain(data_root, d).paths) for d in (args.source, args.target))
    for name, batch in [("floor", args.batch_size)] + ([(f"floor@{args.large_batch}", args.large_batch)]
                                                        if args.large_batch else []):
        print(f"case {name} ...", file=sys.stderr)
        case = report["cases"]["c" if name == "floor" else f"c@{batch}"]
        report["cases"][name] = floor_case(make_config(**{**base, "batch_size": batch}),
                                           case["steps_per_epoch"], eval_images, args.floor_warmup,
                                           args.floor_steps)
    if args.full_run:
        for compile in ([False, True] if cuda else [False]):
            print(f"full run{' --compile' if compile else ''} ...", file=sys.stderr)
            report["full_runs"].append(full_run_case(args, cache_dir, out, compile))
    for k in [int(k) for k in args.concurrent.split(",") if k]:
        print(f"{k} concurrent runs ...", file=sys.stderr)
        report["concurrent"].append(concurrent_case(args, cache_dir, out, k))
    if args.homework:
        print("sweep.py homework ...", file=sys.stderr)
        report["homework"] = homework_case(out, data_root, cache_dir)
    report["checks"] = checks(report)
    report["table"] = table(report)
    (out / "bench_dann.json").write_text(json.dumps(report, indent=2))
    print(f"## DANN {args.source} -> {args.target} on {report['device']}"
          f"{' (TINY CPU SMOKE RUN: generated data, not a speed claim)' if args.tiny else ''}\n")
    print(f"`{report['command']}`; images/s = source + target training images per second; "
          f"s/epoch = training + evaluation of both domains (median of {args.epochs} epochs "
          f"after {args.warmup_epochs} warm-up)\n")
    print(report["table"])
    print(f"\nall numbers: {out / 'bench_dann.json'}")
    return report


if __name__ == "__main__":
    main()

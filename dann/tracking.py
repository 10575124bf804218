"""Experiment tracking: W&B through Accelerate's WandBTracker (with an offline fallback),
per-model metric prefixes, the run summary, and the end-of-run figures (target confusion
matrix, t-SNE of the features of source and target test images).

wandb, matplotlib and sklearn are imported inside the functions that use them: the
training machine may lack them when tracking and figures are off.
"""
from __future__ import annotations

import os
import re
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from dann import selection
from dann.config import TrainConfig
from dann.errors import note, os_reason, warn
from dann.outputs import Snapshot, evaluated

SUMMARY_KEYS = ("target_acc", "best_target_acc", "source_acc")


# ---------------------------------------------------------------------------- tracker setup

def wandb_init_kwargs(config: TrainConfig, output_dir: str) -> dict:
    """wandb.init keyword arguments from the flags (empty flags left to W&B's defaults)."""
    kwargs = {"entity": config.wandb_entity or None, "name": config.run_name or None,
              "group": config.wandb_group or None,
              "tags": [t for t in config.wandb_tags.split(",") if t] or None,
              "dir": output_dir or None}
    return {k: v for k, v in kwargs.items() if v is not None}


def _redact(text: str) -> str:
    key = os.environ.get("WANDB_API_KEY")
    return text.replace(key, "***") if key else text


def start_wandb(project: str, init_kwargs: dict):
    """Accelerate's WandBTracker, started; if W&B is unreachable or not logged in, one
    warning and an offline run instead (synced later with `wandb sync`); None if even
    that fails. Main process only."""
    from accelerate.tracking import WandBTracker

    tracker = WandBTracker(project, **init_kwargs)
    try:
        tracker.start()
        return tracker
    except Exception as e:  # noqa: BLE001 -- any failure to reach W&B must not stop training
        reason = _redact(f"{type(e).__name__}: {e}".splitlines()[0])
    try:
        import wandb
        if wandb.run is not None:
            wandb.finish(quiet=True)
        tracker = WandBTracker(project, **{**init_kwargs, "mode": "offline"})
        tracker.start()
        warn(f"W&B unavailable ({reason}); logging offline to {tracker.run.dir} "
             "-- upload later with `wandb sync`")
        return tracker
    except Exception as e:  # noqa: BLE001
        warn(f"W&B unavailable ({reason}) and offline logging failed "
             f"({_redact(str(e).splitlines()[0] if str(e) else type(e).__name__)}); "
             "training goes on without W&B")
        return None


def init_tracking(accelerator, config: TrainConfig, config_dict: dict) -> None:
    """Start the trackers named by --report_to; only the main process talks to W&B."""
    wants_wandb = any(str(t) == "wandb" for t in accelerator.log_with)
    accelerator.log_with = [t for t in accelerator.log_with if str(t) != "wandb"]
    accelerator.init_trackers(config.wandb_project, config=config_dict)  # tensorboard, if any
    if wants_wandb and accelerator.is_main_process:
        tracker = start_wandb(config.wandb_project, wandb_init_kwargs(config, config.output_dir))
        if tracker is not None:
            tracker.store_init_configuration(config_dict)
            accelerator.trackers.append(tracker)


def wandb_run(accelerator):
    """The live wandb Run on the main process, else None."""
    for tracker in accelerator.trackers:
        if tracker.name == "wandb":
            return tracker.tracker
    return None


def prefixed_log(accelerator, prefix: str, step_offset: int):
    """log(values, step) for one model of a run: every key under `prefix/`, with its own
    x-axis `prefix/step`, so several models (targets, seeds) share one tracker run. W&B
    steps must increase, so each model's steps are shifted by `step_offset`."""
    if not prefix:
        return lambda values, step: accelerator.log(values, step=step)
    run = wandb_run(accelerator)
    if run is not None:
        run.define_metric(f"{prefix}/step")
        run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")

    def log(values: dict, step: int) -> None:
        values = {f"{prefix}/{k}": v for k, v in values.items()}
        values[f"{prefix}/step"] = step
        accelerator.log(values, step=step + step_offset)
    return log


def model_prefix(target: str, seed: int, config: TrainConfig) -> str:
    """Where one model's metrics and files go: '' for a single model, else e.g.
    'cartoon', 'seed1' or 'cartoon/seed1'."""
    parts = [target] if len(config.targets) > 1 else []
    parts += [f"seed{seed}"] if len(config.seed_list) > 1 else []
    return "/".join(parts)


# ---------------------------------------------------------------------------- the summary

def summarize(runs: list[dict]) -> dict:
    """Summary keys over the models of one run (each with target, seed and SUMMARY_KEYS).

    target_acc etc.: mean over all models; *_std: standard deviation over seeds of the
    per-seed mean over targets (sample std; 0 for one seed); <target>/<key>: mean over
    seeds; xdomain/<key>_mean: mean over targets, the metric cross-domain sweeps maximize;
    select/<rule>: the selection scores' mean over all models.
    """
    targets = list(dict.fromkeys(r["target"] for r in runs))
    seeds = list(dict.fromkeys(r["seed"] for r in runs))
    summary = {"num_seeds": len(seeds), "seeds": seeds, "targets": targets}
    for key in SUMMARY_KEYS:
        summary[key] = statistics.fmean(r[key] for r in runs)
        per_seed = [statistics.fmean(r[key] for r in runs if r["seed"] == s) for s in seeds]
        summary[f"{key}_std"] = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
        if len(targets) > 1:
            for t in targets:
                summary[f"{t}/{key}"] = statistics.fmean(r[key] for r in runs if r["target"] == t)
            summary[f"xdomain/{key}_mean"] = statistics.fmean(summary[f"{t}/{key}"] for t in targets)
    return {**summary, **selection.summarize(runs)}


def log_summary(accelerator, summary: dict) -> None:
    """The summary as W&B run summary (not a history step); other trackers get one log."""
    numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
    for tracker in accelerator.trackers:
        if tracker.name == "wandb":
            tracker.tracker.summary.update(numbers)
        else:
            tracker.log(numbers)


# ---------------------------------------------------------------------------- figures

def tsne_sample(domain, n: int, seed: int) -> torch.Tensor:
    """Up to n of the domain's evaluated examples, the same for the same seed."""
    index = evaluated(domain)
    return index[torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))[:n].sort().values]


def features_wanted(config: TrainConfig, split) -> dict[str, torch.Tensor]:
    """The examples whose features the t-SNE shows (computed in the last evaluation's pass)."""
    if not config.tsne:
        return {}
    return {"source_test": tsne_sample(split.source_test, config.tsne_samples, config.seed),
            "test": tsne_sample(split.test, config.tsne_samples, config.seed + 1)}


def tsne_2d(features: np.ndarray, seed: int) -> np.ndarray:
    """t-SNE of all points jointly, after PCA to 50 dimensions (the usual speed-up)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(features)
    if features.shape[1] > 50 and n > 50:
        features = PCA(n_components=50, random_state=seed).fit_transform(features)
    perplexity = min(30.0, (n - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def plot_tsne(points: np.ndarray, colors: np.ndarray, names: list[str], title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        mask = colors == i
        ax.scatter(points[mask, 0], points[mask, 1], s=6, color=cmap(i % 10), label=name, alpha=0.7)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_confusion(counts: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.imshow(counts, cmap="Blues")
    for (i, j), c in np.ndenumerate(counts):
        ax.text(j, i, str(c), ha="center", va="center", fontsize=8,
                color="white" if c > counts.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """A PNG written whole or not at all (a full disk leaves no half file)."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        fig.savefig(tmp, dpi=120, format="png")
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def warn_once(caught: list) -> None:
    """The warnings of drawing the figures, one line each; matplotlib's one per character a class name
    has that its font lacks ('Glyph 26085 missing from font(s) DejaVu Sans', for every glyph of every
    figure) as one line."""
    missing = [re.match(r"Glyph (\d+) .*missing from font", str(w.message)) for w in caught]
    glyphs = "".join(dict.fromkeys(chr(int(m.group(1))) for m in missing if m))
    if glyphs:
        warn(f"the figures' font lacks characters of the class names ({glyphs}): they show as boxes")
    for message in dict.fromkeys(f"{w.category.__name__}: {w.message}" for w, m in zip(caught, missing) if not m):
        warn(message)


def tsne_inputs(config: TrainConfig, snapshot: Snapshot) -> dict | None:
    """The features and labels of the t-SNE's sample (--tsne), read from the last evaluation's pass
    (`snapshot`); every process takes part. A stop signal during the pass raises StopRequested."""
    if not config.tsne:
        return None
    wanted = features_wanted(config, snapshot.split)
    return {name: (snapshot(name).features_of(index).cpu().numpy(), snapshot(name, index).labels.cpu().numpy())
            for name, index in wanted.items()}


def write_figures(accelerator, split, confusion: list, sample: dict | None, config: TrainConfig, out_dir: Path,
                  prefix: str = "") -> tuple[dict[str, str], list[str]]:
    """The target confusion matrix (of the last evaluation) and, given the t-SNE's `sample`
    (tsne_inputs), the t-SNE of source and target test features (by class, by domain): PNGs in
    out_dir, images in W&B; main process only. Returns the paths of the figures written, and
    those that could not be (a full disk...), each with its reason: the run goes on without them."""
    if not accelerator.is_main_process:
        return {}, []
    files, failed = {}, []
    source, target = split.source_test, split.test
    where = f"{source.name}->{target.name}"

    def draw(name: str, plot, *args) -> None:
        path = out_dir / f"{name}.png"
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            plot(*args, path)
            files[name] = str(path)
        except Exception as e:  # noqa: BLE001 -- a figure that cannot be saved must not lose the run
            failed.append(f"{path.name} ({os_reason(e)})")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        draw("confusion_matrix", plot_confusion, np.array(confusion), split.classes,
             f"target confusion matrix ({where})")
        if sample is not None:
            start = time.time()
            (f_s, y_s), (f_t, y_t) = sample["source_test"], sample["test"]
            note(f"t-SNE of {len(f_s) + len(f_t)} features of {source.name} and {target.name} ...")
            points = tsne_2d(np.concatenate([f_s, f_t]), config.seed)
            domain = np.concatenate([np.zeros(len(f_s), int), np.ones(len(f_t), int)])
            draw("tsne_by_class", plot_tsne, points, np.concatenate([y_s, y_t]), split.classes,
                 f"t-SNE of features, by class ({where})")
            draw("tsne_by_domain", plot_tsne, points, domain, [source.name, target.name],
                 f"t-SNE of features, by domain ({where})")
            note(f"t-SNE done in {time.time() - start:.0f} s -> {out_dir}")
    warn_once(caught)
    run = wandb_run(accelerator)
    if run is not None and files:
        import wandb
        key = f"{prefix}/" if prefix else ""
        run.log({f"{key}figures/{name}": wandb.Image(path) for name, path in files.items()})
    return files, failed

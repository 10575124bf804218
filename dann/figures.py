"""The end-of-run figures: the target confusion matrix and the t-SNE of G_f features of source
and target test images (by class, by domain), drawn as PNGs in the model's folder from the last
evaluation's pass. dann/tracking.py sends them to the trackers. A figure that cannot be written
(a full disk) is reported and the run goes on; a PNG is written whole or not at all.

matplotlib and sklearn are imported inside the functions that use them: the training machine
may lack them when the figures are off.
"""
from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from dann.config import TrainConfig
from dann.errors import note, os_reason, warn
from dann.outputs import Snapshot, evaluated


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


def write_figures(accelerator, split, confusion: list, sample: dict | None, config: TrainConfig,
                  out_dir: Path) -> tuple[dict[str, str], list[str]]:
    """The target confusion matrix (of the last evaluation) and, given the t-SNE's `sample`
    (tsne_inputs), the t-SNE of source and target test features (by class, by domain): PNGs in
    out_dir (dann/tracking.py sends them to the trackers); main process only. Returns the paths
    of the figures written, and those that could not be (a full disk...), each with its reason:
    the run goes on without them."""
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
    return files, failed

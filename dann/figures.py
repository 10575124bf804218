"""The end-of-run figures: the target confusion matrix and the t-SNE of G_f features of source
and target test images (by class, by domain), drawn as PNGs in the model's folder from the last
evaluation's pass. dann/tracking.py sends them to the trackers.

matplotlib and sklearn are imported inside the functions that use them: the training machine
may lack them when the figures are off.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from dann.config import TrainConfig
from dann.errors import note, warn
from dann.outputs import Snapshot, evaluated
from dann.signals import StopRequested

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
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def end_of_run_figures(accelerator, snapshot: Snapshot, confusion: list, config: TrainConfig, out_dir: Path) -> dict:
    """The target confusion matrix (of the last evaluation) and, with --tsne, the t-SNE of
    source and target test features (by class, by domain), read from the last evaluation's pass
    (`snapshot`): PNGs in out_dir. Returns their paths for results.json (and the trackers).
    Every process takes part in the pass, the main process draws; a stop signal during the pass
    skips the t-SNE (the model is trained and saved regardless)."""
    sample = None
    if config.tsne:
        try:
            wanted = features_wanted(config, snapshot.split)
            sample = {name: (snapshot(name).features_of(index).cpu().numpy(),
                             snapshot(name, index).labels.cpu().numpy()) for name, index in wanted.items()}
        except StopRequested:
            warn("stop signal: the t-SNE figures are skipped")
    if not accelerator.is_main_process:
        return {}
    out_dir.mkdir(parents=True, exist_ok=True)
    split = snapshot.split
    source, target = split.source_test, split.test
    where = f"{source.name}->{target.name}"
    files = {"confusion_matrix": out_dir / "confusion_matrix.png"}
    plot_confusion(np.array(confusion), split.classes, f"target confusion matrix ({where})", files["confusion_matrix"])
    if sample is not None:
        start = time.time()
        (f_s, y_s), (f_t, y_t) = sample["source_test"], sample["test"]
        note(f"t-SNE of {len(f_s) + len(f_t)} features of {source.name} and {target.name} ...")
        points = tsne_2d(np.concatenate([f_s, f_t]), config.seed)
        domain = np.concatenate([np.zeros(len(f_s), int), np.ones(len(f_t), int)])
        files["tsne_by_class"] = out_dir / "tsne_by_class.png"
        files["tsne_by_domain"] = out_dir / "tsne_by_domain.png"
        plot_tsne(points, np.concatenate([y_s, y_t]), split.classes,
                  f"t-SNE of features, by class ({where})", files["tsne_by_class"])
        plot_tsne(points, domain, [source.name, target.name],
                  f"t-SNE of features, by domain ({where})", files["tsne_by_domain"])
        note(f"t-SNE done in {time.time() - start:.0f} s -> {files['tsne_by_class'].parent}")
    return {"figures": {name: str(path) for name, path in files.items()}}

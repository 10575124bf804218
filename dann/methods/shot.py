"""SHOT (Liang, Hu & Feng, "Do We Really Need to Access the Source Data? Source Hypothesis
Transfer for Unsupervised Domain Adaptation", ICML 2020): source-free adaptation in two phases.

- source: G_f and G_y trained on the labeled source, cross-entropy with label smoothing
  (epsilon = --shot_smoothing); skipped when --source_model gives a trained source model;
- adapt: no source batch is drawn. The source hypothesis G_y is frozen; G_f learns
  information maximization, L_IM = mean_i H(p_i) - H(mean_i p_i) (confident and diverse
  predictions), plus beta CE(p_i, y^_i) with pseudo-labels y^ from clustering: at each epoch's
  start, class centroids of the (L2-normalized) target features weighted by the predictions,
  each image labelled by its nearest centroid (cosine), centroids recomputed from those labels
  and the labels once more (the authors' `obtain_label`).

The method owns its update: one step on the source or one on G_f alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dann import backbones
from dann.methods import terms
from dann.methods.base import Method, Phase
from dann.outputs import size


def information_maximization(logits: torch.Tensor) -> torch.Tensor:
    """mean_i H(p_i) - H(mean_i p_i), p = softmax(logits) (B, C)."""
    p = logits.softmax(1)
    mean = p.mean(0)
    return terms.entropy(logits) + (mean * torch.log(mean + 1e-5)).sum()


def cluster_labels(features: torch.Tensor, probabilities: torch.Tensor, rounds: int = 2) -> torch.Tensor:
    """SHOT's pseudo-labels of N images from their features (N, d) and predictions (N, C):
    centroids weighted by the predictions, then by the labels, nearest by cosine distance; classes
    no image is predicted as get no centroid."""
    features = F.normalize(torch.cat([features, torch.ones(len(features), 1, device=features.device)], 1), dim=1)
    num_classes = probabilities.shape[1]
    present = torch.bincount(probabilities.argmax(1), minlength=num_classes) > 0
    weights = probabilities
    for _ in range(rounds):
        centroids = weights.T @ features / (1e-8 + weights.sum(0)[:, None])  # (C, d + 1)
        similarity = features @ F.normalize(centroids, dim=1).T  # cosine: (N, C)
        similarity[:, ~present] = -torch.inf
        labels = similarity.argmax(1)
        weights = F.one_hot(labels, num_classes).float()
    return labels


class SHOT(Method):
    def __init__(self, config, num_classes: int):
        super().__init__(backbones.from_config(config, num_classes), config)
        self.source_trained = bool(config.source_model)
        self.register_buffer("pseudo_labels", torch.zeros(0, dtype=torch.long))  # one per target image

    def phases(self) -> list[Phase]:
        adapt = Phase("adapt", 1.0 - self.hp.shot_source_share, source=False)
        return [adapt] if self.source_trained else [Phase("source", self.hp.shot_source_share, target=False), adapt]

    def setup(self, split, total_steps: int) -> None:
        super().setup(split, total_steps)
        if split.target is not None:
            self.pseudo_labels = torch.zeros(size(split.target), dtype=torch.long)

    def before_epoch(self, epoch) -> None:
        if epoch.phase == "adapt":
            outputs = epoch.target_outputs()
            labels = cluster_labels(outputs.features.float(), outputs.logits.float().softmax(1))  # image i's: labels[i]
            self.pseudo_labels.copy_(labels.to(self.pseudo_labels.device))

    def update(self, x_s, y_s, x_t, progress, optimize):
        if x_s is not None:  # the source phase
            logits = self.predict(x_s)
            loss = F.cross_entropy(logits, y_s, label_smoothing=self.hp.shot_smoothing)
            optimize(loss)
            return self.source_loss(logits.detach(), y_s)[1]
        logits = self.predict(x_t)
        im = information_maximization(logits)
        pseudo = self.pseudo_labels[optimize.target_index.to(self.pseudo_labels.device)]
        pl = F.cross_entropy(logits, pseudo)
        optimize(self.hp.shot_im_weight * im + self.hp.shot_pl_weight * pl, self.features.parameters())  # G_y frozen
        return {"im_loss": im.detach(), "pl_loss": pl.detach()}

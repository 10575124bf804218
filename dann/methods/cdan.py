"""CDAN (Long, Cao, Wang & Jordan, "Conditional Adversarial Domain Adaptation", NeurIPS 2018).

DANN whose discriminator sees the features f conditioned on the class prediction g: the
multilinear map T(f, g) = f ⊗ g, or its randomized approximation when d * C is large.
CDAN+E (--entropy_conditioning) weights each example's domain loss by 1 + exp(-H(g)).
"""
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from dann import backbones, discriminators
from dann.methods.base import Method

MAX_MULTILINEAR_DIM = 4096  # the paper's threshold: above it, the randomized map


def multilinear_map(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """T(f, g) = f ⊗ g: features (B, d) and class probabilities (B, C) -> (B, d * C)."""
    return rearrange(torch.einsum("bd,bc->bdc", f, g), "b d c -> b (d c)")


class RandomizedMultilinearMap(nn.Module):
    """T(f, g) = (R_f f) ⊙ (R_g g) / sqrt(d_out), R_f and R_g fixed Gaussian matrices.

    Its inner products approximate those of f ⊗ g in expectation (the paper's Theorem 1).
    The matrices are buffers: drawn once, never trained, saved in checkpoints (a resumed
    run must see the same map its discriminator was trained on).
    """

    def __init__(self, d: int, num_classes: int, d_out: int):
        super().__init__()
        self.register_buffer("R_f", torch.randn(d, d_out))
        self.register_buffer("R_g", torch.randn(num_classes, d_out))

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        # (B, d) @ (d, d_out) ⊙ (B, C) @ (C, d_out) -> (B, d_out)
        return (f @ self.R_f) * (g @ self.R_g) / math.sqrt(self.R_f.shape[1])


def entropy_weights(g: torch.Tensor) -> torch.Tensor:
    """CDAN+E's w = 1 + exp(-H(g)) per example, g: class probabilities (B, C) -> (B,).

    In [1, 2]: 2 for a certain (one-hot) prediction, 1 + 1/C for a uniform one, so that
    examples the classifier is sure of count more in the domain loss.
    """
    entropy = -torch.special.xlogy(g, g).sum(1)  # xlogy: 0 log 0 = 0 for one-hot g
    return 1.0 + torch.exp(-entropy)


class CDAN(Method):
    def __init__(self, config, num_classes: int):
        backbone = backbones.from_config(config, num_classes)
        super().__init__(backbone, config)
        d, random_dim = backbone.dim, self.hp.cdan_random_dim
        if d * num_classes > MAX_MULTILINEAR_DIM:
            self.random_map, map_dim = RandomizedMultilinearMap(d, num_classes, random_dim), random_dim
        else:
            self.random_map, map_dim = None, d * num_classes
        G_d = discriminators.build(config, backbone, in_features=map_dim)
        self.adversary = discriminators.DomainAdversary(G_d, self.hp)

    def conditioned_features(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """T(f, g): what G_d sees."""
        return multilinear_map(f, g) if self.random_map is None else self.random_map(f, g)

    def step(self, x_s, y_s, x_t, progress):
        f_s, f_t, logits_s, logits_t = self.features_and_logits(x_s, x_t)  # (B, d), (B, C); the target's conditions G_d
        # g detached as in the authors' code: the domain loss trains G_f through f only,
        # and G_y learns from the labels alone.
        g_s, g_t = logits_s.detach().softmax(1), logits_t.detach().softmax(1)
        # R_alpha sits between T(f, g) and G_d; T is linear in f, so this reverses the
        # gradient G_f gets through the map, exactly as reversing f before it would.
        weights = (entropy_weights(g_s), entropy_weights(g_t)) if self.hp.entropy_conditioning else None
        d_loss, d_metrics = self.adversary(self.conditioned_features(f_s, g_s), self.conditioned_features(f_t, g_t),
                                           progress, weights)
        class_loss, metrics = self.source_loss(logits_s, y_s)
        extra, extra_metrics = self.target_terms(logits_t)
        return class_loss + d_loss + extra, {**metrics, **d_metrics, **extra_metrics}

"""DAN (Long, Cao, Wang & Jordan, "Learning Transferable Features with Deep Adaptation Networks",
ICML 2015): source cross-entropy plus w times the multiple-kernel MMD between source and target
features; with --dan_joint, JAN (Long, Zhu, Wang & Jordan, ICML 2017): the joint MMD of the
features and the class predictions.

    MMD^2 = mean_{i != j} k(s_i, s_j) + mean_{i != j} k(t_i, t_j) - 2 mean_{i, j} k(s_i, t_j)

(the unbiased estimate, on batches of equal size), k the sum of Gaussian kernels
exp(-||a - b||^2 / (2 sigma_m^2)) with sigma_m^2 = 2^m x the batch's mean squared distance,
m = -3..1 (the kernels of TLlib's example). JAN's k is the product of that kernel on the
features and a Gaussian of bandwidth 0.92 on the softmax outputs.
"""
from __future__ import annotations

import torch

from dann import backbones
from dann.methods.base import Method

BANDWIDTHS = tuple(2.0 ** m for m in range(-3, 2))  # multiples of the mean squared distance
OUTPUT_SIGMA = 0.92  # JAN's fixed bandwidth on the class probabilities


def squared_distances(z: torch.Tensor) -> torch.Tensor:
    """||z_i - z_j||^2 for every pair of rows, (N, N)."""
    return (z[:, None, :] - z[None, :, :]).pow(2).sum(-1)


def multi_kernel(z: torch.Tensor, bandwidths=BANDWIDTHS) -> torch.Tensor:
    """The sum of Gaussian kernels over the rows of z, bandwidths relative to their mean squared
    distance (detached: the bandwidth adapts to the features, it is not a way to shrink the loss)."""
    d = squared_distances(z)
    mean = d.mean().detach()
    return sum(torch.exp(-d / (2 * m * mean)) for m in bandwidths)


def gaussian_kernel(z: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.exp(-squared_distances(z) / (2 * sigma ** 2))


def mmd_from_kernel(k: torch.Tensor, n: int) -> torch.Tensor:
    """The unbiased MMD^2 estimate from the kernel matrix of [source (n rows); target (n rows)]."""
    k_ss, k_tt, k_st = k[:n, :n], k[n:, n:], k[:n, n:]
    within = (k_ss.sum() - k_ss.diagonal().sum() + k_tt.sum() - k_tt.diagonal().sum()) / (n * (n - 1))
    return within - 2 * k_st.mean()


def mk_mmd(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """DAN's multiple-kernel MMD^2 between two batches of features (B, d)."""
    return mmd_from_kernel(multi_kernel(torch.cat([f_s, f_t])), len(f_s))


def joint_mmd(f_s: torch.Tensor, f_t: torch.Tensor, p_s: torch.Tensor, p_t: torch.Tensor) -> torch.Tensor:
    """JAN's joint MMD^2: the product of the features' and the predictions' kernels."""
    k = multi_kernel(torch.cat([f_s, f_t])) * gaussian_kernel(torch.cat([p_s, p_t]), OUTPUT_SIGMA)
    return mmd_from_kernel(k, len(f_s))


class DAN(Method):
    def __init__(self, config, num_classes: int):
        super().__init__(backbones.from_config(config, num_classes), config)

    def step(self, x_s, y_s, x_t, progress):
        f_s, f_t, logits_s, logits_t = self.features_and_logits(x_s, x_t)
        n = min(len(f_s), len(f_t))  # the estimate pairs batches of one size (the last of a small domain)
        if self.hp.dan_joint:
            discrepancy = joint_mmd(f_s[:n], f_t[:n], logits_s[:n].softmax(1), logits_t[:n].softmax(1))
        else:
            discrepancy = mk_mmd(f_s[:n], f_t[:n])
        class_loss, metrics = self.source_loss(logits_s, y_s)
        extra, extra_metrics = self.target_terms(logits_t)
        return class_loss + self.hp.dan_weight * discrepancy + extra, {
            **metrics, "mmd": discrepancy.detach(), **extra_metrics}

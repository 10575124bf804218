"""Losses on the target predictions that a method can add to its own: the mean prediction
entropy (Grandvalet & Bengio, NIPS 2004) and Minimum Class Confusion (Jin, Wang, Long &
Wang, ECCV 2020). Both take class logits of an unlabeled target batch (B, C).
"""
from __future__ import annotations

import torch


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of H(p) = -sum_c p_c log p_c, p = softmax(logits): log C for a
    uniform prediction, 0 for a certain one."""
    log_p = logits.log_softmax(1)
    return -(log_p.exp() * log_p).sum(1).mean()


def mcc_loss(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """MCC (the paper's eq. 2-7): with p = softmax(logits / T) (B, C) and example weights
    w_i = B (1 + exp(-H(p_i))) / sum_j (1 + exp(-H(p_j))) (certain predictions count more),
    the class confusion C = p^T diag(w) p (C x C), each row normalized to sum to 1;
    the loss is the mean off-diagonal mass, (sum C - trace C) / num_classes.

    0 when every example is confidently one class; (C - 1) / C for uniform predictions.
    """
    b, c = logits.shape
    p = (logits / temperature).softmax(1)  # (B, C)
    h = -torch.special.xlogy(p, p).sum(1).detach()  # (B,); weights carry no gradient
    w = 1 + torch.exp(-h)
    w = b * w / w.sum()
    confusion = (p * w[:, None]).T @ p  # (C, C)
    confusion = confusion / confusion.sum(1, keepdim=True)
    return (confusion.sum() - confusion.trace()) / c

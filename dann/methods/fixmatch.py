"""FixMatch on the target (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with
Consistency and Confidence", NeurIPS 2020), as a UDA method: source cross-entropy plus
consistency self-training on two views of each target image (dann/augment.py, on the device):
the weak view's confident prediction is the label the strong view is trained to give,

    L = CE(G_y(G_f(x_s)), y_s) + w (1/B) sum_i 1[max_c q_ic >= tau] CE(G_y(G_f(A(x_t_i))), argmax_c q_ic),

q = softmax of the (detached) logits of the weak view a(x_t) (a shift of up to
--fixmatch_shift of the side), A the strong view (the weak view, then RandAugment and
Cutout), tau = --fixmatch_threshold, w = --fixmatch_weight (--fixmatch_ramp dann: ramped
up over the run as --method pseudo_labels's). train/fixmatch_fraction logs the share of target
images above the threshold.

--fixmatch_align: AdaMatch's distribution alignment (Berthelot et al., "AdaMatch: A Unified
Approach to Semi-Supervised Learning and Domain Adaptation", ICLR 2022), q_ic ∝ q_ic p_s,c / p_t,c
with p_s and p_t the source and target batches' mean predictions, before the threshold: the
pseudo-labels keep the source's class proportions, so that they cannot settle on a few classes.
Each process aligns with its own batches' means, as AdaMatch's batch-level form. On mnist ->
mnist_m it halved FixMatch's loss against source-only without making it adapt (docs/RESULTS.md).

--fixmatch_shift 0: weak views that are the images as the source is trained on them (the
digits' source batches are not shifted). On mnist -> mnist_m, shifted weak views (FixMatch's
0.125) teach wrong confident labels and the target falls below source-only; unshifted ones
adapt (docs/RESULTS.md, stage 5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dann import backbones
from dann.methods.base import Method
from dann.schedules import alpha_at


def align_distribution(probs_t: torch.Tensor, probs_s: torch.Tensor) -> torch.Tensor:
    """Each row of probs_t rescaled by mean(probs_s) / mean(probs_t) over the batch, renormalized."""
    aligned = probs_t * (probs_s.mean(0) / probs_t.mean(0))
    return aligned / aligned.sum(1, keepdim=True)


def fixmatch_loss(logits_weak: torch.Tensor, logits_strong: torch.Tensor, threshold: float,
                  logits_source: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The consistency loss above (the mean over all B images) and the mask of confident ones;
    with logits_source, the weak view's probabilities aligned to the source batch's first."""
    probs = logits_weak.detach().softmax(1)
    if logits_source is not None:
        probs = align_distribution(probs, logits_source.detach().softmax(1))
    confidence, pseudo = probs.max(1)
    mask = (confidence >= threshold).float()
    return (mask * F.cross_entropy(logits_strong, pseudo, reduction="none")).mean(), mask


class FixMatch(Method):
    target_views = ("weak", "strong")

    def __init__(self, config, num_classes: int):
        super().__init__(backbones.from_config(config, num_classes), config)
        self.view_options = {"translate": self.hp.fixmatch_shift}

    def step(self, x_s, y_s, x_t, progress):
        x_weak, x_strong = x_t
        both = torch.cat([x_weak, x_strong])  # one target batch of two views: one domain's statistics
        f_s, f_t, logits_s, logits_t = self.features_and_logits(x_s, both)
        logits_weak, logits_strong = logits_t.split([len(x_weak), len(x_strong)])
        consistency, mask = fixmatch_loss(logits_weak, logits_strong, self.hp.fixmatch_threshold,
                                          logits_s if self.hp.fixmatch_align else None)
        class_loss, metrics = self.source_loss(logits_s, y_s)
        extra, extra_metrics = self.target_terms(logits_weak)
        weight = alpha_at(progress, self.hp.fixmatch_weight, self.hp.fixmatch_ramp)
        return class_loss + weight * consistency + extra, {
            **metrics, "fixmatch_loss": consistency.detach(), "fixmatch_fraction": mask.mean(),
            "fixmatch_weight": weight, **extra_metrics}

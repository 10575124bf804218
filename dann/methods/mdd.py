"""MDD (Zhang, Liu, Long & Jordan, "Bridging Theory and Algorithm for Domain Adaptation",
ICML 2019): margin disparity discrepancy. Beside G_y (F), an adversarial head F' of G_y's
architecture sits behind the gradient reversal layer R_alpha. F' learns to agree with F's
predictions on the source and to disagree with them on the target; R_alpha makes G_f shrink
that disparity:

    L = CE(F(f_s), y_s) + w D,  D = gamma CE(F'(f_s), argmax F(f_s)) - log(1 - q'_t[argmax F(f_t)])

averaged over each batch, q' = softmax(F'(f_t)), gamma the margin (--mdd_margin); the target
term is the authors' modified log loss (log(1 - q') + 1e-6 clamped, as in their code and TLlib's).
F' minimizes D (so it maximizes the disparity: D is MDD's negated), G_f maximizes it through R_alpha.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dann import backbones
from dann.discriminators import grad_reverse, reversal_weight
from dann.methods.base import Method


def mdd_loss(logits_s: torch.Tensor, adv_s: torch.Tensor, logits_t: torch.Tensor, adv_t: torch.Tensor,
             margin: float) -> torch.Tensor:
    """D above, from F's logits (their argmax only: no gradient) and F''s logits, (B, C) each."""
    source = F.cross_entropy(adv_s, logits_s.argmax(1))
    q_t = adv_t.softmax(1).gather(1, logits_t.argmax(1, keepdim=True)).squeeze(1)  # q'_t at F's prediction
    target = -torch.log((1.0 - q_t + 1e-6).clamp(max=1.0)).mean()
    return margin * source + target


class MDD(Method):
    def __init__(self, config, num_classes: int):
        backbone = backbones.from_config(config, num_classes)
        super().__init__(backbone, config)
        self.adversarial_head = backbone.new_head(num_classes)  # F'

    def step(self, x_s, y_s, x_t, progress):
        f_s, f_t, logits_s, logits_t = self.features_and_logits(x_s, x_t)
        alpha = reversal_weight(self.hp, progress, self.total_steps)
        adv_s, adv_t = self.per_domain(self.adversarial_head, grad_reverse(f_s, alpha), grad_reverse(f_t, alpha))
        disparity = mdd_loss(logits_s, adv_s, logits_t, adv_t, self.hp.mdd_margin)
        class_loss, metrics = self.source_loss(logits_s, y_s)
        extra, extra_metrics = self.target_terms(logits_t)
        agree = (adv_t.argmax(1) == logits_t.argmax(1)).float().mean()  # F' and F on the target: falls as F' learns
        return class_loss + self.hp.mdd_weight * disparity + extra, {
            **metrics, "mdd_loss": disparity.detach(), "target_agreement": agree.detach(), "alpha": alpha,
            **extra_metrics}

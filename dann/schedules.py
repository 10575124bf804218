"""Pure schedule functions of training progress p in [0, 1] (no hidden step counters).

Ganin & Lempitsky (2015), section 5.2: alpha_p = 2 / (1 + exp(-10 p)) - 1 ramps the gradient
reversal weight from 0 to 1; mu_p = mu_0 / (1 + 10 p)^0.75 anneals the learning rate.
"""
import math


def alpha_at(progress: float, alpha: float, schedule: str) -> float:
    if schedule == "constant":
        return alpha
    if schedule == "dann":
        return alpha * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)
    raise ValueError(f"unknown alpha schedule {schedule!r}")


def lr_factor(progress: float, epoch: int, schedule: str, step_size: int, gamma: float) -> float:
    """Multiplier of the base learning rate; `epoch` counts from 0."""
    if schedule == "step":
        return gamma ** (epoch // step_size)
    if schedule == "dann":
        return (1.0 + 10.0 * progress) ** -0.75
    raise ValueError(f"unknown lr schedule {schedule!r}")

"""Pure schedule functions of training progress p in [0, 1] or of the iteration i (no hidden
step counters: the loop passes them in).

Ganin & Lempitsky (2015), section 5.2: alpha_p = 2 / (1 + exp(-10 p)) - 1 ramps the gradient
reversal weight from 0 to 1; mu_p = mu_0 / (1 + 10 p)^0.75 anneals the learning rate. The
reference implementations' forms over absolute iterations (TLlib's examples, Caffe's `inv`
policy): alpha_i = 2 / (1 + exp(-i / N)) - 1 (a warm start over N iterations, whatever the
run's length) and mu_i = mu_0 (1 + gamma i)^-power.
"""
import math

ALPHA_SCHEDULES = ("constant", "dann", "warm_start")
LR_SCHEDULES = ("step", "dann", "inv")


def alpha_at(progress: float, alpha: float, schedule: str, step: int = 0, warmup_steps: int = 1000) -> float:
    """The gradient reversal weight at progress p (iteration `step`, for 'warm_start')."""
    if schedule == "constant":
        return alpha
    if schedule == "dann":
        return alpha * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)
    if schedule == "warm_start":
        return alpha * (2.0 / (1.0 + math.exp(-step / warmup_steps)) - 1.0)
    raise ValueError(f"unknown alpha schedule {schedule!r}")


def lr_factor(progress: float, epoch: int, schedule: str, step_size: int, gamma: float, *, step: int = 0,
              lr_gamma: float = 0.001, lr_decay: float = 0.75) -> float:
    """Multiplier of the base learning rate; `epoch` and the iteration `step` count from 0."""
    if schedule == "step":
        return gamma ** (epoch // step_size)
    if schedule == "dann":
        return (1.0 + 10.0 * progress) ** -0.75
    if schedule == "inv":
        return (1.0 + lr_gamma * step) ** -lr_decay
    raise ValueError(f"unknown lr schedule {schedule!r}")

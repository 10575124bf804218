"""The DANN mechanism end to end, through the real training loop, on the two-moons problem
of the DANN paper (target = source rotated): a small MLP replaces AlexNet."""
import math

import torch
from accelerate import Accelerator
from torch import nn

from dann.config import TrainConfig
from dann.data import TensorDomain
from dann.model import DANN
from dann.train import fit


def two_moons(n: int, seed: int, angle: float = 0.0, noise: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    t = torch.rand(n, generator=g) * math.pi
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
    x = torch.where(y[:, None] == 1, lower, upper)
    x = x + noise * torch.randn(n, 2, generator=g) - torch.tensor([0.5, 0.25])
    a = math.radians(angle)
    rotation = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return x @ rotation.T, y


class MoonsNet(DANN):
    def __init__(self, discriminator: bool):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.classifier = nn.Linear(64, 2)
        self.discriminator = (nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
                              if discriminator else None)


def target_accuracy(method: str, seed: int) -> float:
    x_s, y_s = two_moons(400, seed=1)
    x_t, y_t = two_moons(400, seed=2, angle=35)  # y_t is only used for evaluation
    config = TrainConfig(epochs=200, batch_size=32, lr=0.05, alpha=1.0, alpha_schedule="dann",
                         lr_schedule="dann", seed=seed, log_every=10_000)
    torch.manual_seed(seed)
    model = MoonsNet(discriminator=method == "dann")
    source = TensorDomain("source", x_s, y_s, batch_size=32, seed=seed)
    target = TensorDomain("target", x_t, y_t, batch_size=32, seed=seed)
    return fit(config, method, Accelerator(cpu=True), model, source, target)["target_acc"]


def test_dann_beats_source_only_on_rotated_moons():
    for seed in (0, 1):
        source_only, dann = target_accuracy("baseline", seed), target_accuracy("dann", seed)
        assert source_only < 0.85, source_only  # the rotation really hurts a source-only model
        assert dann > source_only + 0.10, (seed, source_only, dann)

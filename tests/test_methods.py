"""Every registered method through the one training loop: on the two-moons problem of the
DANN paper (target = source rotated, an MLP backbone) the adaptation methods beat source-only."""
import math

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from dann import plugins
from dann.backbones import Backbone, InputSpec
from dann.config import make_config
from dann.data import TensorDomain
from dann.datasets import Split
from dann.methods import build
from dann.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (see conftest)


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


def moons_mlp(num_classes: int, pretrained: str) -> Backbone:
    """A backbone plug-in for 2-D points, as a user would write one."""
    return Backbone(
        features=nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU()),
        classifier=nn.Linear(64, num_classes), dim=64, input=InputSpec(size=1, min_size=1),
        make_discriminator=lambda d: nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 2)),
        make_decoder=lambda d: nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 2)))


@pytest.fixture(autouse=True)
def mlp_backbone(monkeypatch):
    monkeypatch.setitem(plugins.BACKBONES, "moons_mlp", moons_mlp)


def moons_split(seed: int) -> Split:
    x_s, y_s = two_moons(400, seed=1)
    x_t, y_t = two_moons(400, seed=2, angle=35)  # y_t is only used for evaluation
    source = TensorDomain("source", x_s, y_s, batch_size=32, seed=seed)
    target = TensorDomain("target", x_t, y_t, batch_size=32, seed=seed)
    return Split(train=source, target=target, test=target, source_test=source, classes=["upper", "lower"])


def target_accuracy(method: str, seed: int, epochs: int = 200, **flags) -> float:
    config = make_config(method=method, backbone="moons_mlp", epochs=epochs, batch_size=32, lr=0.05,
                         recipe="homework", lr_schedule="dann", seed=seed, log_every=10_000, eval_every=epochs, **flags)
    torch.manual_seed(seed)
    _, results = fit(config, build(config, 2), Accelerator(cpu=True), moons_split(seed))
    return results["target_acc"]


@pytest.mark.parametrize("method", list(plugins.METHODS))
def test_every_registered_method_trains_through_the_same_loop(method):
    """A few epochs, any method: finite metrics, every epoch recorded, a target accuracy."""
    # AdaBN needs batch norm: a bottleneck gives the MLP one.
    extra = {"bottleneck_dim": 16} if method == "adabn" else {}
    config = make_config(method=method, backbone="moons_mlp", epochs=3, batch_size=32, lr=0.05, seed=0,
                         log_every=5, eval_every=2, **extra)
    model, results = fit(config, build(config, 2), Accelerator(cpu=True), moons_split(0))
    assert [r["epoch"] for r in results["epochs"]] == [1, 2, 3]
    assert [("eval/target_acc" in r) for r in results["epochs"]] == [False, True, True]  # every 2nd, and the last
    assert results["steps"] == 3 * 13 and 0 <= results["target_acc"] <= 1
    assert all(math.isfinite(v) for r in results["epochs"] for k, v in r.items() if k.startswith("train/"))
    assert sum(map(sum, results["confusion_matrix"])) == results["num_target_eval"] == 400
    assert isinstance(model, nn.Module)
    assert all(p.grad is None for p in model.parameters())  # training is over: its gradients are freed


@pytest.mark.slow
def test_adaptation_beats_source_only_on_rotated_moons():
    """Measured (seeds 0, 1; the homework's recipe): source-only 0.75, 0.74; DANN 0.92, 0.94;
    CDAN+E 0.94, 0.92; DSN 0.94, 0.96. Plain CDAN (no entropy conditioning) reaches 0.95 on seed 0 but only
    0.81 on seed 1, where its discriminator collapses early: CDAN+E is tested."""
    for seed in (0, 1):
        source_only = target_accuracy("baseline", seed)
        assert source_only < 0.85, source_only  # the rotation really hurts a source-only model
        ramp = {"alpha": 1.0, "alpha_schedule": "dann"}
        for method, flags in [("dann", ramp), ("cdan", {"entropy_conditioning": True, **ramp}), ("dsn", ramp)]:
            adapted = target_accuracy(method, seed, **flags)
            assert adapted > source_only + 0.10, (method, seed, source_only, adapted)

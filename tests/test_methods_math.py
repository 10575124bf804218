"""The math of CDAN and DSN (dann/methods/cdan.py, dsn.py) on tiny CPU networks: the
conditioning maps, entropy weights, DSN's losses and decoder shapes, and one step of each
method through the `Method` interface (every parameter trained, the right gradients cut)."""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dann.plugins
from dann.backbones import Backbone, InputSpec
from dann.config import make_config
from dann.methods import build
from dann.methods.cdan import RandomizedMultilinearMap, entropy_weights, multilinear_map
from dann.methods.dsn import ImageDecoder, difference_loss, scale_invariant_mse

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (see conftest)

NUM_CLASSES = 3


def small_discriminator(in_features: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, 8), nn.ReLU(), nn.Linear(8, 2))


def tiny_image_backbone(num_classes: int, pretrained: str, dim: int = 16, size: int = 16) -> Backbone:
    """A conv net on images of any side (adaptive pooling); `size` only declares the input."""
    features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                             nn.Flatten(), nn.Linear(16, dim), nn.ReLU())
    return Backbone(features=features, classifier=nn.Linear(dim, num_classes), dim=dim,
                    input=InputSpec(size=size, min_size=8, normalization="domain"),
                    make_discriminator=small_discriminator)


def tiny_point_backbone(num_classes: int, pretrained: str) -> Backbone:
    """2-D points (the moons-style toy problems): no image, so DSN uses its `make_decoder`."""
    return Backbone(features=nn.Sequential(nn.Linear(2, 8), nn.ReLU()), classifier=nn.Linear(8, num_classes),
                    dim=8, input=InputSpec(size=2, min_size=2, normalization="domain"),
                    make_discriminator=small_discriminator, make_decoder=lambda dim: nn.Linear(dim, 2))


@pytest.fixture
def make_method(monkeypatch):
    """make_method(method, backbone_builder, **flags): a Method on a backbone registered as 'tiny'
    for this test only."""
    def make(method: str, builder=tiny_image_backbone, **flags):
        monkeypatch.setitem(dann.plugins.BACKBONES, "tiny", builder)
        torch.manual_seed(0)
        config = make_config(method=method, backbone="tiny", pretrained="none", discriminator="copy", **flags)
        return build(config, NUM_CLASSES)
    return make


def batches(side: int | None = 16, n: int = 4, seed: int = 1):
    """(x_s, y_s), x_t: images (n, 3, side, side), or 2-D points when side is None."""
    generator = torch.Generator().manual_seed(seed)
    shape = (n, 2) if side is None else (n, 3, side, side)
    x_s, x_t = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator) + 0.5
    return (x_s, torch.arange(n) % NUM_CLASSES), x_t


def gradients(method: nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    method.zero_grad()
    loss.backward()
    return {name: p.grad for name, p in method.named_parameters()}


def assert_every_parameter_trained(method: nn.Module, loss: torch.Tensor) -> None:
    """DDP without find_unused_parameters needs a gradient for every parameter, every step."""
    missing = [name for name, g in gradients(method, loss).items() if g is None or not g.abs().sum() > 0]
    assert not missing, f"no gradient: {missing}"


# --- CDAN ---------------------------------------------------------------------------------

def test_multilinear_map_is_the_flattened_outer_product():
    f, g = torch.randn(5, 4), torch.randn(5, 3).softmax(1)
    out = multilinear_map(f, g)
    assert out.shape == (5, 4 * 3)
    assert torch.allclose(out, torch.stack([torch.outer(f[i], g[i]).flatten() for i in range(5)]))


def test_randomized_map_is_fixed_buffers_of_the_right_shape():
    torch.manual_seed(0)
    random_map = RandomizedMultilinearMap(d=10, num_classes=3, d_out=7)
    assert not list(random_map.parameters())  # fixed: no optimizer may move them
    assert set(random_map.state_dict()) == {"R_f", "R_g"}  # saved in checkpoints
    f, g = torch.randn(5, 10), torch.randn(5, 3).softmax(1)
    out = random_map(f, g)
    assert out.shape == (5, 7)
    assert torch.equal(out, random_map(f, g))
    expected = (f @ random_map.R_f) * (g @ random_map.R_g) / math.sqrt(7)
    assert torch.allclose(out, expected)


@pytest.mark.parametrize("dim, randomized", [(2048, False), (2049, True)])  # 2048 * 2 classes = 4096
def test_cdan_randomizes_exactly_above_4096(monkeypatch, dim, randomized):
    monkeypatch.setitem(dann.plugins.BACKBONES, "tiny", partial(tiny_image_backbone, dim=dim))
    config = make_config(method="cdan", backbone="tiny", pretrained="none", cdan_random_dim=32)
    method = build(config, 2)
    assert (method.random_map is not None) == randomized
    assert method.adversary.discriminator[0].in_features == (32 if randomized else dim * 2)
    (x_s, _), x_t = batches(n=2)
    loss, _ = method(x_s, torch.tensor([0, 1]), x_t, 0.5)
    assert torch.isfinite(loss)


def test_entropy_weights_range_and_extremes():
    one_hot = torch.eye(4)
    uniform = torch.full((2, 4), 0.25)
    assert torch.allclose(entropy_weights(one_hot), torch.full((4,), 2.0))
    assert torch.allclose(entropy_weights(uniform), torch.full((2,), 1 + 1 / 4))
    w = entropy_weights(torch.randn(100, 4).mul(3).softmax(1))
    assert (w >= 1).all() and (w <= 2).all()


@pytest.mark.parametrize("entropy_conditioning", [False, True])
def test_cdan_step_trains_everything_and_detaches_g(make_method, entropy_conditioning):
    method = make_method("cdan", entropy_conditioning=entropy_conditioning, alpha=1.0, alpha_schedule="constant")
    (x_s, y_s), x_t = batches()
    loss, metrics = method.step(x_s, y_s, x_t, progress=0.3)
    assert torch.isfinite(loss)
    assert set(metrics) == {"class_loss", "domain_loss", "domain_acc", "class_acc", "alpha"}
    step_grads = gradients(method, loss)
    assert all(g is not None and g.abs().sum() > 0 for g in step_grads.values())
    # The domain loss reaches G_f but not G_y: G_y's gradient is the classification loss's alone.
    class_grads = gradients(method, F.cross_entropy(method.predict(x_s), y_s))
    for name in step_grads:
        if name.startswith("classifier."):
            assert torch.allclose(step_grads[name], class_grads[name], atol=1e-6), name
        if name.startswith("features."):
            assert not torch.allclose(step_grads[name], class_grads[name], atol=1e-6), name


# --- DSN ----------------------------------------------------------------------------------

def naive_difference_loss(h_c, h_p):
    """||H_c^T H_p||_F² / d² with the d x d matrix, after the same normalization (the DSN code's
    mean of the squared correlations)."""
    h_c, h_p = (F.normalize(h - h.mean(0), dim=1) for h in (h_c, h_p))
    return (h_c.T @ h_p).pow(2).mean()


def test_difference_loss_equals_the_naive_mean_squared_correlation():
    torch.manual_seed(0)
    h_c, h_p = torch.randn(6, 20, dtype=torch.float64), torch.randn(6, 20, dtype=torch.float64)
    assert torch.allclose(difference_loss(h_c, h_p), naive_difference_loss(h_c, h_p))


def test_difference_loss_is_zero_for_orthogonal_codes_and_grows_with_overlap():
    """Orthogonal in DSN's sense: H_c^T H_p = 0, every shared feature uncorrelated over the
    batch with every private one. Built from disjoint columns of a Hadamard matrix (each
    column but the first sums to 0, so centring keeps them) times row-orthonormal maps (so
    all rows of a code matrix have one norm, and unit-normalizing them keeps H_c^T H_p = 0)."""
    torch.manual_seed(0)
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    hadamard = torch.kron(torch.kron(h2, h2), h2) / math.sqrt(8)  # (8, 8), orthogonal

    def orthonormal_rows(k: int, d: int = 10) -> torch.Tensor:
        return torch.linalg.qr(torch.randn(d, k)).Q.T  # (k, d)

    shared = 3 * hadamard[:, 1:4] @ orthonormal_rows(3)  # codes of 8 examples, (8, 10)
    private = hadamard[:, 4:8] @ orthonormal_rows(4)
    assert difference_loss(shared, private) < 1e-10
    sweep = [difference_loss(shared, (1 - t) * private + t * shared).item() for t in torch.linspace(0, 1, 6)]
    assert all(a < b for a, b in zip(sweep, sweep[1:])), sweep


def test_scale_invariant_mse_ignores_a_constant_shift():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 8, 8)
    shift = torch.tensor([0.5, -2.0, 7.0]).view(3, 1, 1, 1)  # one constant per example
    assert scale_invariant_mse(x + shift, x) < 1e-10
    assert scale_invariant_mse(x + 0.1 * torch.randn_like(x), x) > 0
    error = (x - 2 * x).flatten(1)  # against the formula: (1/k)Σe² - (1/k²)(Σe)²
    k = error.shape[1]
    expected = (error.pow(2).sum(1) / k - error.sum(1).pow(2) / k**2).mean()
    assert torch.allclose(scale_invariant_mse(2 * x, x), expected, atol=1e-6)


@pytest.mark.parametrize("size, side", [(16, 16), (32, 32), (224, 64)])
def test_dsn_reconstructs_at_a_side_that_fits_the_backbone(make_method, size, side):
    method = make_method("dsn", partial(tiny_image_backbone, size=size))
    x = torch.randn(2, 3, min(size, 64), min(size, 64))  # a 224-declared backbone fed 64x64
    code = method.features(x)
    assert method.decoder(code).shape == (2, 3, side, side)
    assert method.reconstruction_target(x).shape == (2, 3, side, side)


def test_dsn_decoder_stays_modest_for_alexnet_codes():
    assert sum(p.numel() for p in ImageDecoder(9216, 64).parameters()) < 8_000_000


def test_dsn_vector_inputs_use_the_backbones_decoder(make_method):
    method = make_method("dsn", tiny_point_backbone)
    (x_s, _), _ = batches(side=None)
    assert method.decoder(method.features(x_s)).shape == x_s.shape
    assert method.reconstruction_target(x_s) is x_s


@pytest.mark.parametrize("builder, side", [(tiny_image_backbone, 16), (tiny_point_backbone, None)])
def test_dsn_step_trains_every_parameter(make_method, builder, side):
    method = make_method("dsn", builder)
    (x_s, y_s), x_t = batches(side=side)
    loss, metrics = method.step(x_s, y_s, x_t, progress=0.5)
    assert torch.isfinite(loss)
    assert set(metrics) == {"class_loss", "recon_loss", "difference_loss", "similarity_loss",
                            "domain_acc", "class_acc", "alpha"}
    assert_every_parameter_trained(method, loss)
    assert method.private_s is not method.features and method.private_t is not method.private_s


def test_dsn_reconstruction_trains_the_private_encoders(make_method):
    """With L_difference off, E_p^s and E_p^t learn from L_recon alone: D sees E_c(x) + E_p(x)."""
    method = make_method("dsn", dsn_difference=0.0)
    (x_s, y_s), x_t = batches()
    grads = gradients(method, method.step(x_s, y_s, x_t, 0.5)[0])
    assert all(grads[n].abs().sum() > 0 for n in grads if n.startswith(("private_s.", "private_t.")))


# --- both, through the Method interface ---------------------------------------------------

@pytest.mark.parametrize("name", ["cdan", "dsn"])
def test_forward_dispatches_to_predict_and_step(make_method, name):
    method = make_method(name)
    assert method.needs_target
    (x_s, y_s), x_t = batches()
    assert method.predict(x_s).shape == (4, NUM_CLASSES)
    assert torch.equal(method(x_s), method.predict(x_s))
    assert torch.equal(method.embed(x_s), method.features(x_s))
    loss, metrics = method.step(x_s, y_s, x_t, 0.7)
    loss_fwd, metrics_fwd = method(x_s, y_s, x_t, 0.7)
    assert torch.equal(loss, loss_fwd) and metrics.keys() == metrics_fwd.keys()
    assert all(torch.equal(torch.as_tensor(metrics[k]), torch.as_tensor(metrics_fwd[k])) for k in metrics)


# --- the target terms, MCC, pseudo-labels, AdaBN -------------------------------------------

def test_entropy_term_known_answers():
    from dann.methods.terms import entropy

    assert entropy(torch.zeros(4, 7)).item() == pytest.approx(math.log(7))  # uniform: log C
    assert entropy(torch.tensor([[50.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)  # certain: 0


def test_mcc_loss_known_answers():
    from dann.methods.terms import mcc_loss

    assert mcc_loss(torch.zeros(8, 5), 2.5).item() == pytest.approx(4 / 5)  # uniform: (C - 1) / C
    confident = 100 * torch.eye(4).repeat(2, 1)  # every example sure of its own class
    assert mcc_loss(confident, 2.5).item() == pytest.approx(0.0, abs=1e-6)
    mixed = torch.tensor([[3.0, 2.5, 0.0], [0.0, 3.0, 2.5], [2.5, 0.0, 3.0]])
    assert 0 < mcc_loss(mixed, 1.0) < mcc_loss(mixed, 5.0)  # a higher temperature confuses more


def test_the_target_terms_reach_every_method_that_takes_them(make_method):
    (x_s, y_s), x_t = batches()
    for method in ("dann", "cdan", "dsn", "mcc", "pseudo_labels"):
        plain = make_method(method, mcc_weight=0.0, entropy_weight=0.0)
        loss_plain, metrics = plain.step(x_s, y_s, x_t, 0.5)
        assert "mcc_loss" not in metrics and "entropy" not in metrics
        with_terms = make_method(method, mcc_weight=2.0, entropy_weight=0.5)
        loss, metrics = with_terms.step(x_s, y_s, x_t, 0.5)
        expected = loss_plain + 2.0 * metrics["mcc_loss"] + 0.5 * metrics["entropy"]  # same weights (seeded)
        assert torch.allclose(loss, expected, atol=1e-5), method


def test_pseudo_labels_use_only_confident_target_predictions(make_method):
    (x_s, y_s), x_t = batches()
    never = make_method("pseudo_labels", pl_threshold=1.0)  # no softmax reaches 1 on a random net
    _, metrics = never.step(x_s, y_s, x_t, 0.5)
    assert metrics["pl_fraction"] == 0 and metrics["pl_loss"] == 0
    always = make_method("pseudo_labels", pl_threshold=0.0)
    loss, metrics = always.step(x_s, y_s, x_t, 1.0)
    assert metrics["pl_fraction"] == 1 and metrics["pl_loss"] > 0
    assert metrics["pl_weight"] == pytest.approx(1.0, abs=1e-3)  # the ramp at p = 1
    assert_every_parameter_trained(always, loss)


def test_adabn_evaluates_each_domain_with_its_own_statistics(make_method):
    from dann.methods.adabn import batch_norms

    method = make_method("adabn", bottleneck_dim=6).eval()
    x_target = torch.randn(32, 3, 16, 16) * 3 + 2  # a shifted domain
    before = [m.running_mean.clone() for m in batch_norms(method)]
    plain = method.predict(x_target)
    with method.evaluation_statistics(iter(x_target.split(8))):
        adapted = method.predict(x_target)
        bottleneck = method.features.bottleneck
        h = bottleneck[0](method.features.body(x_target))  # the bottleneck's input to its batch norm
        assert torch.allclose(bottleneck[1].running_mean, h.mean(0), atol=1e-4)  # the target's mean
    assert not torch.allclose(plain, adapted)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, batch_norms(method)))  # restored
    assert torch.equal(method.predict(x_target), plain)


def test_adabn_without_batch_norm_is_refused(make_method):
    from dann.errors import UserError

    with pytest.raises(UserError, match="has no batch norm"):
        make_method("adabn")


# --- how parameters learn: groups, clipping ---------------------------------------------------

def test_param_groups_give_the_backbone_its_lr_multiplier(make_method):
    from dann.optim import make_optimizer

    method = make_method("dann", backbone_lr_mult=0.1, bottleneck_dim=5)
    groups = {g["name"]: g for g in method.param_groups()}
    body = {id(p) for p in method.features.body.parameters()}
    assert {id(p) for p in groups["backbone"]["params"]} == body
    assert not body & {id(p) for p in groups["heads"]["params"]}  # bottleneck, G_y, G_d
    assert len(body) + len(groups["heads"]["params"]) == len(list(method.parameters()))
    optimizer = make_optimizer(method, make_config(lr=0.02))
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx([0.002, 0.02])


def test_the_loop_keeps_each_groups_multiple_and_clips(monkeypatch):
    """Through fit: the schedule scales every group's rate and keeps the ratio; --clip_grad
    bounds the norm of the gradient the optimizer steps with (train/grad_norm logs it before)."""
    from accelerate import Accelerator

    import dann.train
    from dann.data import TensorDomain
    from dann.datasets import Split
    from dann.schedules import lr_factor

    monkeypatch.setitem(dann.plugins.BACKBONES, "tiny", tiny_image_backbone)
    config = make_config(method="dann", backbone="tiny", pretrained="none", epochs=2, batch_size=4, lr=0.1,
                         lr_schedule="dann", backbone_lr_mult=0.1, clip_grad=1e-3, log_every=1)
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % NUM_CLASSES
    source = TensorDomain("s", x, y, batch_size=4, seed=0)
    split = Split(train=source, target=TensorDomain("t", x + 1, y, batch_size=4, seed=0), test=source,
                  source_test=source, classes=["a", "b", "c"])
    stepped = []  # (lr of each group, gradient norm) at every optimizer step

    def recording_optimizer(model, config):
        optimizer = make_optimizer(model, config)
        step = optimizer.step

        def recorded_step(*args, **kwargs):
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            stepped.append(([g["lr"] for g in optimizer.param_groups], torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()))
            return step(*args, **kwargs)
        optimizer.step = recorded_step
        return optimizer

    from dann.optim import make_optimizer
    monkeypatch.setattr(dann.train, "make_optimizer", recording_optimizer)
    logs = []
    dann.train.fit(config, build(config, NUM_CLASSES), Accelerator(cpu=True), split,
                   log=lambda values, step: logs.append(values))
    assert len(stepped) == 4
    for i, (lrs, norm) in enumerate(stepped):
        assert lrs == pytest.approx([0.1 * 0.1 * lr_factor(i / 4, 0, "dann", 20, 0.1),
                                     0.1 * lr_factor(i / 4, 0, "dann", 20, 0.1)])  # backbone, heads
        assert norm <= 1e-3 * 1.0001
    assert all(v["train/grad_norm"] > 1e-3 for v in logs if "train/grad_norm" in v)  # clipped from above

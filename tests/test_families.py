"""The method families beyond one loss and one step: MDD (margin), MCD (classifier discrepancy,
three updates per iteration), DAN/JAN (kernel discrepancy), Deep CORAL, FixMatch (weak and
strong target views), SHOT (source-free, two phases). For each: its loss on small tensors
against a formula worked by hand, and the parts its gradients reach (and the frozen ones they
do not); then what the loop gives them: phases, views, the steps a method owns."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from conftest import ROOT, write_tiny_pacs
from dann import plugins
from dann.backbones import Backbone
from dann.config import make_config
from dann.data import ImageTransform, InputSpec, TensorDomain
from dann.datasets import Split
from dann.methods import build
from dann.methods.base import Method
from dann.methods.coral import coral_loss, covariance, mean_loss
from dann.methods.dan import BANDWIDTHS, joint_mmd, mk_mmd, mmd_from_kernel, multi_kernel
from dann.methods.fixmatch import align_distribution, fixmatch_loss
from dann.methods.mcd import discrepancy
from dann.methods.mdd import mdd_loss
from dann.methods.shot import cluster_labels, information_maximization
from dann.train import fit, spans

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (see conftest)

NUM_CLASSES = 3


def mlp_backbone(num_classes: int, pretrained: str) -> Backbone:
    """8-d points -> 6-d features (batch norm: per-domain passes matter) -> logits."""
    return Backbone(features=nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU()),
                    classifier=nn.Linear(6, num_classes), dim=6, input=InputSpec(size=1, min_size=1),
                    make_discriminator=lambda d: nn.Linear(d, 2))


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setitem(plugins.BACKBONES, "mlp8", mlp_backbone)
    monkeypatch.setitem(plugins.BACKBONES, "mlp8_plain", plain_backbone)


def make(method: str, **flags):
    torch.manual_seed(0)
    config = make_config(method=method, **{"backbone": "mlp8", "pretrained": "none", **flags})
    return build(config, NUM_CLASSES), config


def batches(seed: int = 0, b: int = 6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 8, generator=g), torch.arange(b) % NUM_CLASSES, torch.randn(b, 8, generator=g) + 1


def plain_backbone(num_classes: int, pretrained: str) -> Backbone:
    """The same without batch norm: no statistic couples the examples of a batch."""
    return Backbone(features=nn.Sequential(nn.Linear(8, 6), nn.ReLU()), classifier=nn.Linear(6, num_classes), dim=6,
                    input=InputSpec(size=1, min_size=1), make_discriminator=lambda d: nn.Linear(d, 2))


def grads(module: nn.Module) -> list:
    return [p.grad for p in module.parameters()]


def reached(module: nn.Module) -> bool:
    return any(g is not None and g.abs().sum() > 0 for g in grads(module))


def term_gradients(method: str, weight: str, **flags) -> dict[str, list]:
    """The gradient a method's own term gives each part: the loss's gradient at weight 1 minus
    its gradient with the term's weight at 0 (same seed, same batch)."""
    found = []
    for w in (1.0, 0.0):
        net, _ = make(method, **{weight: w}, **flags)
        net.train()
        net.step(*batches(), 0.5)[0].backward()
        found.append({name: [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                             for p in part.parameters()] for name, part in net.named_children()})
    return {name: [a - b for a, b in zip(found[0][name], found[1][name])] for name in found[0]}


def nonzero(gradients: list) -> bool:
    return any(g.abs().sum() > 1e-9 for g in gradients)


# ---------------------------------------------------------------------------- MDD

def test_mdd_loss_known_answer():
    logits_s = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # F predicts 0, 1
    adv_s = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    logits_t = torch.tensor([[0.0, 3.0], [1.0, 0.0]])  # F predicts 1, 0
    adv_t = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])  # q' at those: 0.5, 0.25
    source = (math.log(2.0) + math.log(1.0 + math.e)) / 2  # CE of F' against F's predictions
    target = -(math.log(0.5 + 1e-6) + math.log(0.75 + 1e-6)) / 2  # -log(1 - q')
    assert mdd_loss(logits_s, adv_s, logits_t, adv_t, margin=4.0).item() == pytest.approx(4 * source + target)


def test_mdd_gradients_reach_f_prime_and_reversed_g_f_but_not_g_y():
    term = term_gradients("mdd", "mdd_weight", alpha=1.0, alpha_schedule="constant")
    assert nonzero(term["adversarial_head"]) and nonzero(term["features"])
    assert not nonzero(term["classifier"])  # G_y: its argmax only
    # G_f receives minus the gradient the disparity would give it without the reversal layer
    method, _ = make("mdd")
    method.train()
    f_s, f_t = method.features(batches()[0]), method.features(batches()[2])
    logits_s, logits_t = method.classifier(f_s), method.classifier(f_t)
    mdd_loss(logits_s, method.adversarial_head(f_s), logits_t, method.adversarial_head(f_t), 4.0).backward()
    for ours, straight in zip(term["features"], grads(method.features)):
        torch.testing.assert_close(ours, -straight)
    assert not nonzero(term_gradients("mdd", "mdd_weight", alpha=0.0, alpha_schedule="constant")["features"])


# ---------------------------------------------------------------------------- MCD

def test_mcd_discrepancy_known_answer():
    same = torch.randn(4, 3)
    assert discrepancy(same, same).item() == 0
    certain = torch.tensor([[50.0, 0.0]]), torch.tensor([[0.0, 50.0]])
    assert discrepancy(*certain).item() == pytest.approx(1.0)  # |1 - 0| and |0 - 1|, averaged
    assert discrepancy(torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]])).item() == pytest.approx(0.25)


def test_mcd_takes_three_updates_each_on_its_own_parts():
    """A: G_f, F1, F2; B: F1 and F2 only (G_f sees no gradient, it is fixed); C: G_f only, n times."""
    method, _ = make("mcd", mcd_steps=3)
    method.train()
    taken = []

    def optimize(loss, parameters=None):
        chosen = list(method.parameters()) if parameters is None else list(parameters)
        method.zero_grad()
        loss.backward()
        taken.append(({id(p) for p in chosen}, {id(p) for p in method.parameters() if p.grad is not None
                                                and p.grad.abs().sum() > 0}))

    optimize.target_index = None
    metrics = method.update(*batches(), 0.3, optimize)
    ids = lambda module: {id(p) for p in module.parameters()}  # noqa: E731
    heads, body = ids(method.classifier) | ids(method.classifier2), ids(method.features)
    assert [chosen for chosen, _ in taken] == [heads | body, heads, body, body, body]
    assert taken[1][1] <= heads  # step B: G_f computed without gradient
    assert taken[2][1] & body  # step C: G_f learns
    assert metrics["discrepancy_heads"] > 0 and metrics["discrepancy_features"] >= 0


# ---------------------------------------------------------------------------- DAN / JAN

def test_mmd_from_a_kernel_matrix_known_answer():
    a, b, c, d, e, f = 0.9, 0.1, 0.2, 0.3, 0.4, 0.8
    k = torch.tensor([[1, a, b, c], [a, 1, d, e], [b, d, 1, f], [c, e, f, 1]])  # sources 0, 1; targets 2, 3
    assert mmd_from_kernel(k, 2).item() == pytest.approx(a + f - (b + c + d + e) / 2)


def test_multi_kernel_bandwidths_are_relative_to_the_mean_squared_distance():
    z = torch.tensor([[0.0], [1.0]])  # squared distances 0 and 1: mean 0.5
    expected = sum(math.exp(-1.0 / (2 * m * 0.5)) for m in BANDWIDTHS)
    k = multi_kernel(z)
    assert k[0, 1].item() == pytest.approx(expected) and k[0, 0].item() == pytest.approx(len(BANDWIDTHS))
    assert torch.allclose(multi_kernel(3 * z), k)  # scale-free: the bandwidth follows the features


def test_mmd_is_small_for_one_distribution_and_large_for_two():
    g = torch.Generator().manual_seed(0)
    s, t_same, t_far = (torch.randn(64, 4, generator=g) for _ in range(3))
    assert abs(mk_mmd(s, t_same).item()) < 0.1 < mk_mmd(s, t_far + 3).item()
    p = torch.full((64, 2), 0.5)
    assert joint_mmd(s, t_far + 3, p, p).item() == pytest.approx(mk_mmd(s, t_far + 3).item())  # same predictions


@pytest.mark.parametrize("joint", [False, True])
def test_dan_gradients_reach_g_f_only_through_the_discrepancy(joint):
    term = term_gradients("dan", "dan_weight", dan_joint=joint)
    assert nonzero(term["features"])
    assert nonzero(term["classifier"]) == joint  # JAN's kernel reads the predictions, DAN's only the features


# ---------------------------------------------------------------------------- Deep CORAL

def test_coral_loss_known_answer():
    f_s = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # covariance diag(2, 0)
    f_t = torch.tensor([[0.0, 1.0], [0.0, -1.0]])  # covariance diag(0, 2)
    assert covariance(f_s).tolist() == [[2.0, 0.0], [0.0, 0.0]]
    assert coral_loss(f_s, f_t).item() == pytest.approx(8 / (4 * 2 * 2))  # ||diag(2, -2)||^2 / (4 d^2)
    assert coral_loss(f_s, f_s + 5).item() == 0  # a shift changes no covariance
    assert mean_loss(f_s, f_s + torch.tensor([3.0, 1.0])).item() == pytest.approx((9 + 1) / 2)  # ... but the means


def test_coral_mean_weight_adds_the_mean_term_to_the_loss():
    method, _ = make("coral", coral_weight=2.0, coral_mean_weight=3.0)
    method.train()
    x_s, y_s, x_t = batches()
    loss, metrics = method.step(x_s, y_s, x_t, 0.5)
    expected = metrics["class_loss"] + 2.0 * metrics["coral_loss"] + 3.0 * metrics["coral_mean_loss"]
    assert metrics["coral_mean_loss"] > 0 and loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert "coral_mean_loss" not in make("coral")[0].step(x_s, y_s, x_t, 0.5)[1]  # off by default


@pytest.mark.parametrize("weight", ["coral_weight", "coral_mean_weight"])
def test_coral_gradients_reach_g_f_not_g_y(weight):
    term = term_gradients("coral", weight)
    assert nonzero(term["features"]) and not nonzero(term["classifier"])


# ---------------------------------------------------------------------------- FixMatch

def test_fixmatch_loss_known_answer():
    weak = torch.tensor([[10.0, 0.0], [0.0, 0.0]])  # confident (0.99995) in class 0; unsure (0.5)
    strong = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
    loss, mask = fixmatch_loss(weak, strong, threshold=0.95)
    assert mask.tolist() == [1.0, 0.0] and loss.item() == pytest.approx(math.log(2.0) / 2)  # mean over all B


def test_distribution_alignment_known_answer():
    # target batch predicts class 0 85% of the time on average, the source batch 50%: by hand,
    # row 1 (0.9, 0.1) -> (0.9 * 0.5/0.85, 0.1 * 0.5/0.15) = (9/17, 1/3) -> (27/44, 17/44),
    # row 2 (0.8, 0.2) -> (8/17, 2/3) -> (12/29, 17/29): its pseudo-label moves to class 1
    probs_t, probs_s = torch.tensor([[0.9, 0.1], [0.8, 0.2]]), torch.tensor([[0.7, 0.3], [0.3, 0.7]])
    aligned = align_distribution(probs_t, probs_s)
    assert aligned.tolist() == [pytest.approx([27 / 44, 17 / 44]), pytest.approx([12 / 29, 17 / 29])]
    strong = torch.zeros(2, 2)
    _, plain = fixmatch_loss(probs_t.log(), strong, threshold=0.55)
    loss, mask = fixmatch_loss(probs_t.log(), strong, threshold=0.6, logits_source=probs_s.log())
    assert plain.tolist() == [1.0, 1.0] and mask.tolist() == [1.0, 0.0]  # 27/44 = 0.614 passes, 17/29 = 0.586 not
    assert loss.item() == pytest.approx(math.log(2.0) / 2)


def test_fixmatch_align_labels_the_target_from_the_aligned_probabilities():
    method, _ = make("fixmatch", fixmatch_threshold=0.0, fixmatch_align=True, backbone="mlp8_plain")
    method.train()
    x_s, y_s, x_t = batches()  # the shifted target: every prediction class 2, the source's mixed
    strong = x_t + 0.1
    _, metrics = method.step(x_s, y_s, (x_t, strong), 0.5)
    with torch.no_grad():
        weak_logits, strong_logits, source_logits = (method.predict(x) for x in (x_t, strong, x_s))
        aligned, _ = fixmatch_loss(weak_logits, strong_logits, 0.0, source_logits)
        relabeled = align_distribution(weak_logits.softmax(1), source_logits.softmax(1)).argmax(1)
    assert len(set(weak_logits.argmax(1).tolist())) == 1 and len(set(relabeled.tolist())) > 1
    assert metrics["fixmatch_loss"].item() == pytest.approx(aligned.item())


def test_fixmatch_ramp_dann_weighs_the_consistency_as_pseudo_labels_does():
    method, _ = make("fixmatch", fixmatch_threshold=0.0, fixmatch_weight=2.0, fixmatch_ramp="dann",
                     backbone="mlp8_plain")
    x_s, y_s, x_t = batches()
    for progress, weight in [(0.0, 0.0), (0.5, 2.0 * (2 / (1 + math.exp(-5.0)) - 1))]:
        loss, metrics = method.step(x_s, y_s, (x_t, x_t + 0.1), progress)
        assert metrics["fixmatch_weight"] == pytest.approx(weight)
        assert loss.item() == pytest.approx((metrics["class_loss"] + weight * metrics["fixmatch_loss"]).item(), rel=1e-5)


def test_fixmatch_trains_through_the_strong_view_only():
    method, _ = make("fixmatch", fixmatch_threshold=0.0, backbone="mlp8_plain")  # every weak prediction teaches
    method.train()
    x_s, y_s, x_t = batches()
    x_weak, x_strong = x_t.clone().requires_grad_(), (x_t + 0.1).requires_grad_()
    loss, metrics = method.step(x_s, y_s, (x_weak, x_strong), 0.5)
    (loss - metrics["class_loss"]).backward()
    assert x_weak.grad is None or x_weak.grad.abs().sum() == 0  # the weak view only labels
    assert x_strong.grad.abs().sum() > 0 and reached(method.features) and reached(method.classifier)
    assert metrics["fixmatch_fraction"] == 1.0


def test_the_data_layer_gives_weak_and_strong_views_replayable_per_batch():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g)
    transform = ImageTransform(torch.device("cpu"), InputSpec(size=32, min_size=32), 32, hflip=False)
    domain = TensorDomain("t", images, torch.zeros(8, dtype=torch.long), batch_size=4, seed=0, transform=transform)
    (weak, strong), _, index = next(domain.train_batches(0, views=("weak", "strong"), with_index=True))
    plain = transform(images[index])
    assert weak.shape == strong.shape == plain.shape and not torch.equal(weak, strong)
    (again_weak, again_strong), _ = next(domain.train_batches(0, views=("weak", "strong")))
    assert torch.equal(weak, again_weak) and torch.equal(strong, again_strong)  # a resumed run replays them


def image_backbone(num_classes: int, pretrained: str) -> Backbone:
    """16x16 RGB images -> 6-d features -> logits."""
    return Backbone(features=nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 6), nn.ReLU()),
                    classifier=nn.Linear(6, num_classes), dim=6, input=InputSpec(size=16, min_size=16),
                    make_discriminator=lambda d: nn.Linear(d, 2))


@pytest.mark.parametrize("shift", [0.0, 0.125])
def test_the_loop_gives_fixmatch_weak_views_shifted_by_at_most_fixmatch_shift(monkeypatch, shift):
    """--fixmatch_shift 0: every weak view the method is given is a target image as the
    network sees it unaugmented; FixMatch's 0.125 (2 pixels of 16) moves most of them."""
    monkeypatch.setitem(plugins.BACKBONES, "img16", image_backbone)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8, generator=g)
    labels = torch.arange(24) % NUM_CLASSES
    transform = ImageTransform(torch.device("cpu"), InputSpec(size=16, min_size=16), 16, hflip=False)
    source, target = (TensorDomain(name, images, labels, batch_size=8, seed=0, transform=transform)
                      for name in ("s", "t"))
    split = Split(train=source, target=target, test=target, source_test=source, classes=list("abc"))
    method, config = make("fixmatch", backbone="img16", fixmatch_shift=shift, epochs=1, batch_size=8, log_every=100)
    assert method.view_options == {"translate": shift}
    seen, real_step = [], method.step

    def recording_step(x_s, y_s, x_t, progress):
        seen.append(x_t[0].detach().clone())
        return real_step(x_s, y_s, x_t, progress)
    method.step = recording_step
    fit(config, method, Accelerator(cpu=True), split)
    plain = {image.numpy().tobytes() for image in transform(images)}
    unmoved = [image.numpy().tobytes() in plain for batch in seen for image in batch]
    assert len(unmoved) == 24
    assert all(unmoved) if shift == 0 else sum(unmoved) < 12


# ---------------------------------------------------------------------------- SHOT

def test_information_maximization_known_answers():
    assert information_maximization(torch.zeros(4, 3)).item() == pytest.approx(0.0, abs=1e-4)  # unsure, diverse
    confident_diverse = torch.tensor([[30.0, 0.0], [0.0, 30.0]])
    assert information_maximization(confident_diverse).item() == pytest.approx(-math.log(2.0), abs=1e-4)
    confident_one_class = torch.tensor([[30.0, 0.0], [30.0, 0.0]])
    assert information_maximization(confident_one_class).item() == pytest.approx(0.0, abs=1e-4)


def test_clustering_pseudo_labels_follow_the_features_not_a_wrong_prediction():
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.05, 1.0]])
    predictions = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.6, 0.4], [0.2, 0.8]])  # image 3: wrong
    assert cluster_labels(features, predictions).tolist() == [0, 0, 1, 1, 1]
    one_class = torch.tensor([[0.9, 0.1]] * 5)  # no image predicted as class 1: no centroid for it
    assert cluster_labels(features, one_class).tolist() == [0] * 5


def test_shot_phases_source_then_adaptation_without_source_batches():
    method, _ = make("shot", shot_source_share=0.25)
    assert [(s.name, s.start, s.end, s.source, s.target) for s in spans(method.phases(), 40)] == [
        ("source", 0, 10, True, False), ("adapt", 10, 40, False, True)]
    trained, _ = make("shot", source_model="/some/run")
    assert [s.name for s in spans(trained.phases(), 40)] == ["adapt"]  # a trained source model: adaptation only


class Counting(TensorDomain):
    """A domain that counts the batches drawn from it."""
    drawn = 0

    def train_batches(self, *args, **kwargs):
        for batch in super().train_batches(*args, **kwargs):
            type(self).drawn += 1
            yield batch


def test_shot_adapts_g_f_alone_with_no_source_batch():
    g = torch.Generator().manual_seed(0)
    x_s, x_t = torch.randn(48, 8, generator=g), torch.randn(48, 8, generator=g) + 1
    y = torch.arange(48) % NUM_CLASSES
    Counting.drawn = 0
    source = Counting("s", x_s, y, batch_size=8, seed=0)
    target = TensorDomain("t", x_t, y, batch_size=8, seed=0)
    split = Split(train=source, target=target, test=target, source_test=source, classes=list("abc"))
    method, config = make("shot", shot_source_share=0.5, epochs=2, batch_size=8, lr=0.1, log_every=100)
    taken = {}
    real_update = method.update

    def recording_update(x_s, y_s, x_t, progress, optimize):  # G_y's weights around each adaptation step
        before = [p.detach().clone() for p in method.classifier.parameters()]
        metrics = real_update(x_s, y_s, x_t, progress, optimize)
        if x_s is None:
            taken.setdefault("adapt", []).append(all(torch.equal(a, b) for a, b in
                                                     zip(before, method.classifier.parameters())))
        return metrics
    method.update = recording_update
    model, results = fit(config, method, Accelerator(cpu=True), split)
    assert results["steps"] == 12 and Counting.drawn <= 6 + 1  # 6 source steps (a batch may be prefetched)
    assert taken["adapt"] and all(taken["adapt"])  # G_y frozen during adaptation
    first, second = results["epochs"]
    assert "train/class_loss" in first and "train/im_loss" in second and "train/class_loss" not in second
    assert len(model.pseudo_labels) == 48


def test_owned_updates_run_under_the_precisions_autocast(request):
    """A method that owns its update is called outside DDP's wrapper: the loop enters autocast itself."""
    from dann.train import train_step

    seen = []

    class Recording(plugins.load(plugins.METHODS, "mcd")):
        def update(self, x_s, y_s, x_t, progress, optimize):
            seen.append(self.classifier(self.features(x_s)).dtype)
            return super().update(x_s, y_s, x_t, progress, optimize)

    from accelerate.state import AcceleratorState

    config = make_config(method="mcd", backbone="mlp8", pretrained="none", epochs=1, batch_size=6)
    AcceleratorState._reset_state(reset_partial_state=True)  # this process's other tests built fp32 ones
    request.addfinalizer(lambda: AcceleratorState._reset_state(reset_partial_state=True))
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    model = Recording(config, NUM_CLASSES)
    from dann.optim import make_optimizer
    from dann.train import NonFiniteGuard, Run, Span

    model, optimizer = accelerator.prepare(model, make_optimizer(model, config))
    run = Run(config, model, optimizer, accelerator, None, NonFiniteGuard(accelerator, optimizer, 0),
              lambda *a: None, None, None, 1, 1, 1, [Span("train", 0, 1, True, True)])
    x_s, y_s, x_t = batches()
    metrics = train_step(run, x_s, y_s, x_t, 0.0)
    assert seen == [torch.bfloat16] and math.isfinite(float(metrics["class_loss"]))


# ---------------------------------------------------------------------------- through the command line

TINY_TRAIN = ROOT / "tests" / "tiny_train.py"


def tiny_flags(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--cpu", "--backbone", "tiny", "--pretrained", "none", "--data_root", str(data), "--batch_size", "2",
            "--epochs", "2", "--lr", "0.05", "--num_workers", "0", "--cache_dir", str(data.parent / "cache"),
            "--no-tsne", "--select_rules", "cheap", "--output_dir", str(out), *extra]


@pytest.mark.slow
@pytest.mark.parametrize("method, extra", [("mcd", ()), ("shot", ("--shot_source_share", "0.5")),
                                           ("fixmatch", ("--fixmatch_threshold", "0.5")), ("mdd", ())])
def test_two_processes_train_every_family_as_one_model(method, extra, tmp_path):
    """Two CPU processes (gloo): each target image evaluated once; a method that owns its update
    bypasses DDP's wrapper, so the loop averages its gradients and shares its buffers itself:
    both processes end every step with the same weights."""
    data = write_tiny_pacs(tmp_path / "PACS", per_class=4)
    digests = tmp_path / "digests"
    digests.mkdir()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(TINY_TRAIN),
                           "dann", *tiny_flags(data, tmp_path / "run", "--method", method, *extra)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TINY_DIGEST_DIR": str(digests)})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["num_processes"] == 2 and results["num_target_eval"] == 8  # 2 classes x 4 images, once each
    if plugins.load(plugins.METHODS, method).update is not Method.update:
        rank0, rank1 = ((digests / f"rank{r}.txt").read_text() for r in (0, 1))
        assert rank0 == rank1


@pytest.mark.slow
def test_shot_from_a_trained_source_model_adapts_from_its_weights(tmp_path):
    """--source_model: train_baseline.py's saved weights start G_f and G_y; SHOT then skips its
    source phase (every step adapts, no source batch). A folder without weights is one line."""
    data = write_tiny_pacs(tmp_path / "PACS", per_class=4)
    source = tmp_path / "source"
    run = lambda script, *argv: subprocess.run(  # noqa: E731
        [sys.executable, str(TINY_TRAIN), script, *argv], capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    done = run("baseline", *tiny_flags(data, source, "--save_model"))
    assert done.returncode == 0, done.stderr[-2000:]
    adapted = tmp_path / "shot"
    done = run("dann", *tiny_flags(data, adapted, "--method", "shot", "--source_model", str(source)))
    assert done.returncode == 0, done.stderr[-2000:]
    epochs = json.loads((adapted / "results.json").read_text())["epochs"]
    assert all("train/im_loss" in r and "train/class_loss" not in r for r in epochs)
    missing = run("dann", *tiny_flags(data, tmp_path / "x", "--method", "shot", "--source_model", str(tmp_path)))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1].startswith(f"error: --source_model {tmp_path}: no model.safetensors")

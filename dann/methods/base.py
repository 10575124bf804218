"""The interface every UDA method implements, in the spirit of DomainBed's `Algorithm`.

A method is an nn.Module holding its networks. It builds them from a backbone and the
number of classes, says whether it needs target batches, how its parameters learn
(`param_groups`), and gives `step(x_s, y_s, x_t, progress)` (the loss of one iteration; the
loop runs backward and the optimizer) and `predict` (class logits). `forward` dispatches to
both, so that every call goes through the DDP wrapper that `accelerate.prepare` puts around
the method.

A family that needs more declares it (each has a default that asks for nothing):
`update(x_s, y_s, x_t, progress, optimize)` instead of `step` to take its own optimizer steps
(MCD: three per iteration), `phases()` for stretches of the run with their own batches and
schedules (SHOT: source training, then adaptation without source batches), `target_views`
for augmented views of each target batch (FixMatch: weak and strong), `before_epoch` for work
at each epoch's start (SHOT's clustering pseudo-labels), `setup` for what depends on the data.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dann.backbones import Backbone
from dann.data import InputSpec
from dann.methods import terms


class Phase(NamedTuple):
    """A stretch of a run: its share of the steps, which batches it draws; the progress p a
    method and the lr schedule see restarts from 0 at its start, and so does SGD's momentum."""
    name: str
    share: float = 1.0
    source: bool = True  # labeled source batches
    target: bool = True  # unlabeled target batches (for a method that needs them)


class Method(nn.Module):
    needs_target = True  # does step() use target batches (unlabeled)?
    target_views: tuple[str, ...] = ()  # e.g. ("weak", "strong"): x_t is a tuple of those views (dann/augment.py)
    view_options: dict = {}  # keyword arguments of those views, e.g. {"translate": 0.0} (FixMatch's --fixmatch_shift)

    def __init__(self, backbone: Backbone, config):
        super().__init__()
        self.features = backbone.features  # G_f
        self.classifier = backbone.classifier  # G_y
        self.input_spec: InputSpec = backbone.input
        self.hp = config.method_hp  # the method's own hyperparameters (dann/hparams.py)
        # Parts trained at --backbone_lr_mult times --lr (the pretrained body of G_f).
        self.slow_parts = [backbone.body]
        self.backbone_lr_mult = config.backbone_hp.backbone_lr_mult
        self.total_steps = 0  # the run's length in steps (setup)
        self.domain_batches = config.domain_batches

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, x_t: torch.Tensor | None = None,
                progress: float = 0.0):
        """model(x): class logits. model(x_s, y_s, x_t, progress): step(...), (loss, metrics)."""
        if y is None:
            return self.predict(x)
        return self.step(x, y, x_t, progress)

    def step(self, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor | None,
             progress: float) -> tuple[torch.Tensor, dict]:
        """The loss of one iteration and metrics to log (tensors or floats).

        x_s, y_s: source images and labels; x_t: target images (no labels ever reach a method),
        None when `needs_target` is False; progress: p in [0, 1] over the whole run.
        """
        raise NotImplementedError

    def update(self, x_s: torch.Tensor | None, y_s: torch.Tensor | None, x_t, progress: float, optimize) -> dict:
        """For a method that owns its updates (instead of `step`): this iteration's optimizer steps,
        each `optimize(loss, parameters)` (the loop's guard, clipping, precision and process
        sync apply to each); returns the metrics to log. `optimize.target_index` holds the
        target batch's examples (their index in the target domain)."""
        raise NotImplementedError

    @property
    def owns_update(self) -> bool:
        return type(self).update is not Method.update

    def phases(self) -> list[Phase]:
        """The run's phases, in order (default: one, with source and target batches)."""
        return [Phase("train")]

    def setup(self, split, total_steps: int) -> None:
        """Before training (and before a checkpoint is loaded): what depends on the data. Buffers a
        checkpoint must carry are sized here. `total_steps`: the run's length, for schedules over
        absolute iterations; every part of the method with a `total_steps` attribute gets it."""
        for part in self.modules():
            if hasattr(part, "total_steps"):
                part.total_steps = total_steps

    def before_epoch(self, epoch) -> None:
        """At the start of each epoch's training (not when a run resumes midway: what it computes
        is in the checkpoint). `epoch.phase` names the phase; `epoch.target_outputs()` is one pass
        over the unlabeled target training images (logits and G_f features of all of them)."""

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Features for the t-SNE figures (G_f, or a method's shared code)."""
        return self.features(x)

    def param_groups(self) -> list[dict]:
        """The optimizer's parameter groups, each with `lr_mult`, its learning rate as a multiple
        of --lr (TLlib's get_parameters): G_f's pretrained body at --backbone_lr_mult, the rest
        (bottleneck, G_y, G_d, decoders) at 1. The loop's schedule scales each group's rate."""
        slow = list(dict.fromkeys(p for part in self.slow_parts for p in part.parameters()))
        slow_ids = {id(p) for p in slow}
        fast = [p for p in self.parameters() if id(p) not in slow_ids]
        groups = [{"params": slow, "lr_mult": self.backbone_lr_mult, "name": "backbone"},
                  {"params": fast, "lr_mult": 1.0, "name": "heads"}]
        return [g for g in groups if g["params"]]

    def per_domain(self, net: nn.Module, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """net(a), net(b). One pass over both batches, except for networks with batch norm under
        --domain_batches separate (the default): those see each domain's batch on its own, so that
        a batch's statistics are one domain's (normalizing a mixed batch hurt DANN on digits: issue
        19's probe); 'joint' concatenates them, as TLlib's examples do."""
        if self.domain_batches == "separate" and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                     for m in net.modules()):
            return net(a), net(b)
        return net(torch.cat([a, b])).split([len(a), len(b)])

    def features_and_logits(self, x_s: torch.Tensor, x_t: torch.Tensor):
        """f_s, f_t = G_f(x_s), G_f(x_t) and their class logits G_y(f_s), G_y(f_t): the opening
        of most steps (each network sees each domain on its own when it has batch norm)."""
        f_s, f_t = self.per_domain(self.features, x_s, x_t)
        logits_s, logits_t = self.per_domain(self.classifier, f_s, f_t)
        return f_s, f_t, logits_s, logits_t

    def source_loss(self, logits_s: torch.Tensor, y_s: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The source cross-entropy every method starts from, and its metrics."""
        class_loss = F.cross_entropy(logits_s, y_s)
        return class_loss, {"class_loss": class_loss.detach(), "class_acc": accuracy(logits_s, y_s).detach()}

    def target_terms(self, logits_t: torch.Tensor) -> tuple[torch.Tensor | float, dict]:
        """The terms on target predictions that --entropy_weight and --mcc_weight switch on
        (any method whose hyperparameters derive from TargetTerms), and their metrics."""
        loss, metrics = 0.0, {}
        if getattr(self.hp, "entropy_weight", 0):
            value = terms.entropy(logits_t)
            loss, metrics["entropy"] = loss + self.hp.entropy_weight * value, value.detach()
        if getattr(self.hp, "mcc_weight", 0):
            value = terms.mcc_loss(logits_t, self.hp.mcc_temperature)
            loss, metrics["mcc_loss"] = loss + self.hp.mcc_weight * value, value.detach()
        return loss, metrics

    def uses_target_logits(self) -> bool:
        """Whether target_terms needs G_y on the target batch."""
        return bool(getattr(self.hp, "entropy_weight", 0) or getattr(self.hp, "mcc_weight", 0))

    def evaluation_statistics(self, unlabeled_batches):
        """A context in which `predict` is evaluated on a domain, given that domain's unlabeled
        batches (AdaBN recomputes batch-norm statistics on them); default: nothing changes."""
        return nullcontext()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == labels).float().mean()

"""Unsupervised model selection: scores that rank trained models without target labels, one
small function per rule with its paper and formula, registered in dann/plugins.py (SELECTION,
with the direction that is better). A run scores its model at the end (`end_of_run`; those
rules that train nothing also at each evaluation, `during_training`) from the evaluation's own
pass (dann/outputs.py) over the held-out labeled source validation split (--source_val) and
the unlabeled target (`Evidence`), and records select/<name>. How far each rule lands from the oracle on a grid is
the experiment tier's question (dann/experiments/choosing.py).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from dann import plugins
from dann.config import TrainConfig, selection_rules
from dann.datasets import Split
from dann.errors import UserError, note
from dann.methods import terms
from dann.outputs import Snapshot, evaluated
from dann.signals import Interrupted, StopRequested

TARGET_SAMPLE = 2000  # target images the scores read at most (a fixed sample): SND's N x N stays small
SND_TEMPERATURE = 0.05  # Saito et al.'s tau
RATIO_DIMS = 64  # principal components the domain classifier sees
RATIO_FOLDS = 5
RATIO_L2 = (1e-3, 1e-2, 1e-1, 1.0)  # the domain classifier's L2 strengths, chosen by cross-validation


class Unavailable(Exception):
    """A rule cannot score this run (no validation split, no target, too few images)."""


MISSING = {  # why an Evidence field is None
    "logits_val": "no source validation split (--source_val 0)",
    "labels_val": "no source validation split (--source_val 0)",
    "logits_t": "no unlabeled target (trained on the target)",
    "features_val": "features are collected at the end of the run",
    "features_t": "features are collected at the end of the run",
    "run": "it retrains the model, at the end of the run",
}


@dataclass
class RunContext:
    """What reverse validation retrains with: the run's settings, data and device."""
    config: TrainConfig
    accelerator: object
    split: object  # dann.datasets.Split
    target_index: torch.Tensor  # the target sample the evidence was computed on
    steps: int  # its budget: --rv_steps, at most a quarter of the run's own steps
    channels_last: bool = False
    stop: object = None


@dataclass
class Evidence:
    """A trained model's outputs that the rules read: logits (N, C) and labels on the source
    validation split, logits on the target sample, and (at the end of a run) G_f features of
    both for the domain classifier. A field is None where the run has none."""
    logits_val: torch.Tensor | None = None
    labels_val: torch.Tensor | None = None
    logits_t: torch.Tensor | None = None
    features_val: torch.Tensor | None = None
    features_t: torch.Tensor | None = None
    run: RunContext | None = None

    def need(self, *names: str) -> list[torch.Tensor]:
        """The fields a rule reads; Unavailable (with why) if one is missing."""
        for name in names:
            if getattr(self, name) is None:
                raise Unavailable(MISSING[name])
        return [getattr(self, name) for name in names]

    @cached_property
    def density_ratios(self) -> torch.Tensor:
        """w(x_v) = p_t(x_v) / p_s(x_v) at the validation images (shared by IWCV and DEV)."""
        f_val, f_t = self.need("features_val", "features_t")
        return density_ratios(f_val, f_t)


# ---------------------------------------------------------------------------- the rules

def source_val_accuracy(e: Evidence) -> float:
    """Source validation accuracy, the baseline of every comparison of validators (e.g. Musgrave,
    Belongie & Lim, "Unsupervised Domain Adaptation: A Reality Check", 2021):
    acc = (1/N_v) sum_i [argmax_c G_y(G_f(x_i))_c = y_i] over the held-out source images.
    Higher is better."""
    logits, labels = e.need("logits_val", "labels_val")
    return (logits.argmax(1) == labels).float().mean().item()


def source_val_loss(e: Evidence) -> float:
    """Source validation loss, (1/N_v) sum_i -log p(y_i | x_i): the risk IWCV and DEV reweight.
    Lower is better."""
    logits, labels = e.need("logits_val", "labels_val")
    return F.cross_entropy(logits, labels).item()


def target_entropy(e: Evidence) -> float:
    """Mean target prediction entropy (Morerio, Cavazza & Murino, "Minimal-Entropy Correlation
    Alignment", ICLR 2018, which selects by it): (1/N_t) sum_i H(p_i), H(p) = -sum_c p_c log p_c,
    p_i = softmax(G_y(G_f(x_i))); log C for uniform predictions, 0 for certain ones.
    Lower is better."""
    logits, = e.need("logits_t")
    return terms.entropy(logits).item()


def soft_neighborhood_density(e: Evidence, temperature: float = SND_TEMPERATURE) -> float:
    """SND (Saito, Kim, Teterwak, Sclaroff, Darrell & Saenko, "Tune it the Right Way:
    Unsupervised Validation of Domain Adaptation via Soft Neighborhood Density", ICCV 2021):
    with q_i = p_i / ||p_i|| the L2-normalized target softmax outputs, the similarities
    s_ij = q_i . q_j / tau (a point is not its own neighbour: s_ii = -inf), their row softmax
    n_ij = exp(s_ij) / sum_k exp(s_ik), SND = (1/N_t) sum_i H(n_i): high when every
    prediction has many close neighbours (dense clusters). Higher is better."""
    logits, = e.need("logits_t")
    if len(logits) < 2:
        raise Unavailable("it needs at least two target images")
    q = F.normalize(logits.softmax(1), dim=1)
    similarity = (q @ q.T / temperature).fill_diagonal_(-math.inf)  # (N_t, N_t)
    return torch.special.entr(similarity.softmax(1)).sum(1).mean().item()


def iwcv(e: Evidence) -> float:
    """Importance-weighted validation (Sugiyama, Krauledat & Müller, "Covariate Shift Adaptation
    by Importance Weighted Cross Validation", JMLR 2007): the source validation loss reweighted
    to the target, R = (1/N_v) sum_i w(x_i) l_i, l_i = -log p(y_i | x_i), with the density
    ratios w = p_t / p_s of a domain classifier on G_f features (`density_ratios`).
    Lower is better."""
    logits, labels = e.need("logits_val", "labels_val")
    return iwcv_risk(e.density_ratios, F.cross_entropy(logits, labels, reduction="none")).item()


def dev(e: Evidence) -> float:
    """Deep Embedded Validation (You, Wang, Long & Wang, "Towards Accurate Model Selection in Deep
    Unsupervised Domain Adaptation", ICML 2019): IWCV with the control variate the weights give,
    R = mean(w l) + eta mean(w) - eta, eta = -Cov(w l, w) / Var(w) (`dev_risk`): unbiased like
    IWCV, with lower variance. Lower is better."""
    logits, labels = e.need("logits_val", "labels_val")
    return dev_risk(e.density_ratios, F.cross_entropy(logits, labels, reduction="none")).item()


def reverse_validation(e: Evidence) -> float:
    """Reverse validation (Zhong et al., ECML 2010; Ganin et al., "Domain-Adversarial Training of
    Neural Networks", JMLR 2016, section 5.1.2): label the target with the trained model,
    y_t = argmax G_y(G_f(x_t)); train a fresh copy of the same method and network with the
    pseudo-labeled target as its source and the unlabeled source as its target, for a short
    fixed budget (--rv_steps, at most a quarter of the run's steps); its accuracy on the source
    validation split. A model whose
    target labels are wrong teaches the reverse model wrong classes. Higher is better."""
    logits_t, run = e.need("logits_t", "run")
    e.need("labels_val")
    if run.steps < 1:
        raise Unavailable("the run trained no step")
    return reverse_accuracy(run, logits_t.argmax(1))


# ---------------------------------------------------------------------------- the weights IWCV and DEV share

def iwcv_risk(weights: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """(1/N) sum_i w_i l_i."""
    return (weights * losses).mean()


def dev_risk(weights: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """mean(w l) + eta mean(w) - eta, eta = -Cov(w l, w) / Var(w) (You et al.'s Algorithm 1;
    eta = 0 when the weights do not vary: then there is nothing to correct with)."""
    weights, losses = weights.double(), losses.double()
    weighted = weights * losses
    variance = weights.var()
    if not variance > 1e-12:
        return weighted.mean()
    eta = -torch.cov(torch.stack([weighted, weights]))[0, 1] / variance
    return weighted.mean() + eta * weights.mean() - eta


def density_ratios(f_s: torch.Tensor, f_t: torch.Tensor, dims: int = RATIO_DIMS, folds: int = RATIO_FOLDS,
                   l2: tuple[float, ...] = RATIO_L2) -> torch.Tensor:
    """w_i = p_t(f_i) / p_s(f_i) at the source points f_s (N_s, d), against the target points
    f_t (N_t, d), from a domain classifier (Sugiyama et al. 2007; You et al. 2019:
    w = (N_s / N_t) P(target | f) / P(source | f)). Here an L2-regularized logistic regression
    on the pooled points' first `dims` principal components, standardized, each domain
    weighing the same (so that its odds P(t | f) / P(s | f) are the density ratio itself);
    the L2 strength is the one of `l2` with the lowest cross-validated log-loss over `folds`
    folds, and each source point's ratio comes from the fold model that did not see it."""
    n_s, n_t = len(f_s), len(f_t)
    folds = min(folds, n_s, n_t)
    if folds < 2:
        raise Unavailable("the domain classifier needs at least two source validation and two target images")
    x = torch.cat([f_s, f_t]).float()
    x = x - x.mean(0)
    if x.shape[1] > dims:  # the top principal directions (an exact SVD, on the features' device)
        x = x @ torch.linalg.svd(x, full_matrices=False).Vh[:dims].T
    x = x.double().cpu()
    x = x / x.std(0).clamp_min(1e-8)
    y = torch.cat([torch.zeros(n_s), torch.ones(n_t)]).double()
    weight = torch.cat([torch.full((n_s,), 0.5 / n_s), torch.full((n_t,), 0.5 / n_t)]).double()
    # each domain's points spread over the folds alike (the same order for the same size)
    fold = torch.cat([fold_ids(n_s, folds), fold_ids(n_t, folds)])
    best = None
    for strength in l2:
        logits = torch.empty(len(x), dtype=torch.float64)
        for k in range(folds):
            held = fold == k
            beta = fit_logistic(x[~held], y[~held], weight[~held], strength)
            logits[held] = with_bias(x[held]) @ beta
        loss = (weight * F.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum().item()
        if best is None or loss < best[0]:
            best = (loss, logits)
    return best[1][:n_s].exp().float()


def fold_ids(n: int, folds: int) -> torch.Tensor:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    ids = torch.empty(n, dtype=torch.long)
    ids[order] = torch.arange(n) % folds
    return ids


def with_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, l2: float, iters: int = 100) -> torch.Tensor:
    """argmin_beta sum_i weight_i BCE(x_i . beta + b, y_i) + l2 / 2 ||beta||^2 (no penalty on
    the bias b), by Newton's method with step halving: deterministic, until the objective moves by
    less than 1e-12."""
    x = with_bias(x)
    penalty = torch.full((x.shape[1],), l2, dtype=x.dtype)
    penalty[-1] = 0

    def objective(beta):
        bce = F.binary_cross_entropy_with_logits(x @ beta, y, reduction="none")
        return (weight * bce).sum() + 0.5 * (penalty * beta ** 2).sum()

    beta = torch.zeros(x.shape[1], dtype=x.dtype)
    value = objective(beta)
    for _ in range(iters):
        p = torch.sigmoid(x @ beta)
        gradient = x.T @ (weight * (p - y)) + penalty * beta
        hessian = (x * (weight * p * (1 - p))[:, None]).T @ x + torch.diag(penalty) \
            + 1e-12 * torch.eye(x.shape[1], dtype=x.dtype)
        step = torch.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-6:
            candidate = beta - size * step
            if (new := objective(candidate)) <= value:
                break
            size /= 2
        else:
            break  # no step improves: at the optimum to numerical precision
        beta, converged = candidate, (value - new).abs() < 1e-12
        value = new
        if converged:
            break
    return beta


# ---------------------------------------------------------------------------- reverse validation

def reverse_accuracy(run: RunContext, pseudo_labels: torch.Tensor) -> float:
    """Train a fresh copy of the run's method through the same loop (`fit`: the non-finite guard,
    clipping, mixed precision) on the pseudo-labeled target sample (source side) and the
    unlabeled source training images (target side) for run.steps steps, with the run's optimizer
    and schedules over that budget; its accuracy on the source validation split."""
    from dann import methods  # the training library, imported when a run retrains
    from dann.train import fit

    config, split = run.config, run.split
    labeled = split.target.whole().subset(run.target_index).with_labels(pseudo_labels)
    validation = split.source_val.whole()
    reverse = Split(train=labeled, target=split.train.whole(), test=validation, source_test=validation,
                    classes=split.classes)
    budget = dataclasses.replace(config, epochs=1, iters_per_epoch=run.steps, max_steps=0, eval_every=1,
                                 log_every=run.steps, output_dir="", resume="", checkpoint_every=0)
    net = methods.build(budget, len(split.classes))
    if run.channels_last:
        net = net.to(memory_format=torch.channels_last)
    try:
        _, results = fit(budget, net, run.accelerator, reverse, log=lambda values, step: None, stop=run.stop,
                         quiet=True)
    except Interrupted:  # the caller checkpoints the run it scores: a resumed run scores again
        raise StopRequested from None
    except UserError:  # the non-finite guard
        raise Unavailable("the reverse model's loss was not finite") from None
    return results["target_acc"]


# ---------------------------------------------------------------------------- what a run records

def target_sample(domain) -> torch.Tensor:
    """The target images the scores read: those `evaluated`, at most a fixed random TARGET_SAMPLE."""
    index = evaluated(domain)
    if len(index) <= TARGET_SAMPLE:
        return index
    return index[torch.randperm(len(index), generator=torch.Generator().manual_seed(0))[:TARGET_SAMPLE].sort().values]


def features_wanted(config: TrainConfig, split) -> dict[str, torch.Tensor]:
    """The examples whose G_f features the end-of-run scores read (IWCV and DEV's domain classifier),
    to be computed in the last evaluation's pass: the source validation split and the target sample."""
    if not selection_rules(config, trains=True):
        return {}
    wanted = {"source_val": evaluated(split.source_val)} if split.source_val is not None else {}
    if split.target is not None:
        wanted["target"] = target_sample(split.target)
    return wanted


def evidence(snapshot: Snapshot, features: bool) -> Evidence:
    """The model's outputs the rules read, from an evaluation's pass: on the source validation
    split and the target sample (with G_f features, if asked and computed in that pass)."""
    split, found = snapshot.split, Evidence()
    if split.source_val is not None:
        val = snapshot("source_val")
        found.logits_val, found.labels_val = val.logits, val.labels
        found.features_val = val.features_of(val.index) if features else None
    if split.target is not None:
        target = snapshot("target", target_sample(split.target))
        found.logits_t = target.logits
        found.features_t = target.features_of(target.index) if features else None
    return found


def score(names: list[str], evidence: Evidence) -> tuple[dict, list[str]]:
    """({'select/<name>': value}, ['<name> (why not)']) for the rules `names`."""
    values, missing = {}, []
    for name in names:
        try:
            value = float(plugins.load(plugins.SELECTION, name)(evidence))
        except Unavailable as e:
            missing.append(f"{name} ({e})")
            continue
        if math.isfinite(value):
            values[f"select/{name}"] = value
        else:
            missing.append(f"{name} (not finite: {value})")
    return values, missing


def during_training(snapshot: Snapshot, config: TrainConfig) -> dict:
    """The scores of the rules that train nothing, for an evaluation's record (select/*)."""
    names = selection_rules(config, trains=False)
    return score(names, evidence(snapshot, features=False))[0] if names else {}


def end_of_run(config: TrainConfig, snapshot: Snapshot, steps: int, channels_last: bool = False,
               stop=None, log=None) -> dict:
    """Every score --select_rules asks for, of the trained model (its last evaluation's pass,
    `snapshot`): select/<name> for results.json and the trackers (`log(values, step)`), and
    `select_images` (how many images they read). Seeded, on its own random stream: the same
    after a resume, and training's own streams are left as they were. A stop signal raises
    StopRequested (the caller checkpoints: the resumed run scores)."""
    names = selection_rules(config)
    if not names:
        return {}
    accelerator, split = snapshot.accelerator, snapshot.split
    device = accelerator.device
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        found = evidence(snapshot, features=bool(features_wanted(config, split)))
        target_index = target_sample(split.target) if split.target is not None else torch.arange(0)
        budget = min(config.rv_steps, max(1, steps // 4))  # adds at most a quarter to the training time
        found.run = RunContext(config, accelerator, split, target_index, budget, channels_last, stop)
        values, missing = score(names, found)
    if missing:
        note(f"selection scores not computed: {'; '.join(missing)}")
    if values and log is not None:
        log(values, steps)
    counts = {"source_val": 0 if found.logits_val is None else len(found.logits_val),
              "target": 0 if found.logits_t is None else len(found.logits_t)}
    return {**values, "select_images": counts}


def summarize(runs: list[dict]) -> dict:
    """select/<name> over the models of one run (targets, seeds): their mean, where every model has it."""
    keys = dict.fromkeys(k for r in runs for k in r if k.startswith("select/"))
    return {k: sum(r[k] for r in runs) / len(runs) for k in keys if all(k in r for r in runs)}

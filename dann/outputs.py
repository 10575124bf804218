"""One forward pass of a model over a domain, shared by evaluation (accuracy, confusion matrix),
the selection scores (logits, features) and the t-SNE figures (features).

`Snapshot` holds a model's outputs on a Split's domains at one set of weights, each domain
passed through once however many readers it has (at the end of a run the target is scored,
validated and embedded in one pass). Every process scores a shard and the shards are
gathered, so that every process holds the same outputs whatever their number.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from dann import progress
from dann.data import eval_indices
from dann.signals import StopRequested, stop_requested

# The Split fields a snapshot scores, and the unlabeled domain whose statistics each is seen
# under (Method.evaluation_statistics: AdaBN): the target's for target-side domains, the
# training domain's for source-side ones when adapting.
TARGET_SIDE, SOURCE_SIDE = ("test", "target"), ("source_test", "source_val")


@dataclass
class Outputs:
    """A model's outputs over the examples `index` of a domain: class logits (N, C), the labels
    (N,) (never shown to a method), and G_f features (M, d) of the examples `features_index`."""
    index: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor | None = None
    features_index: torch.Tensor | None = None

    def confusion(self, num_classes: int) -> torch.Tensor:
        """(true, predicted) counts, (C, C)."""
        pairs = self.labels.long() * num_classes + self.logits.argmax(1)
        return torch.bincount(pairs, minlength=num_classes ** 2).view(num_classes, num_classes).cpu()

    def covers(self, index: torch.Tensor) -> bool:
        return bool(torch.isin(index.cpu(), self.index.cpu()).all())

    def subset(self, index: torch.Tensor) -> Outputs:
        """The outputs of the examples `index` (all of them scored here), in that order."""
        rows = positions(self.index, index)
        features, features_index = self.features, self.features_index
        if features is not None:
            keep = torch.isin(features_index.cpu(), index.cpu())
            features, features_index = features[keep.to(features.device)], features_index[keep]
        return Outputs(index, self.logits[rows.to(self.logits.device)], self.labels[rows.to(self.labels.device)],
                       features, features_index)

    def features_of(self, index: torch.Tensor) -> torch.Tensor:
        """G_f features (len(index), d) of examples whose features were computed."""
        if self.features is None or not bool(torch.isin(index.cpu(), self.features_index.cpu()).all()):
            raise KeyError("features of these examples were not computed in this pass")
        return self.features[positions(self.features_index, index).to(self.features.device)]


def positions(within: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Where each element of `index` sits in `within` (both 1-D, `within` without repeats)."""
    order = torch.argsort(within.cpu())
    found = order[torch.searchsorted(within.cpu()[order], index.cpu())]
    return found


def size(domain) -> int:
    """Its number of examples (also through a wrapper that forwards attributes, as the benchmark's)."""
    return len(domain.labels)


def evaluated(domain) -> torch.Tensor:
    """The examples of a domain that are scored: all of them, or in a quick check (--max_steps)
    the same evenly spread few (`eval_limit`)."""
    return eval_indices(size(domain), limit=getattr(domain, "eval_limit", 0))


def predicts_from_embedding(net) -> bool:
    """Whether predict(x) is G_y(embed(x)) (the base Method's own): one pass gives both."""
    from dann.methods.base import Method

    return type(net).predict is Method.predict and type(net).embed is Method.embed


def gather_shards(parts: list[torch.Tensor | None], accelerator) -> list[torch.Tensor | None]:
    """Each tensor of `parts` concatenated over the processes in process order, on every process
    (through the CPU: shards may be empty or of unequal lengths)."""
    from accelerate.utils import gather_object

    every = gather_object([[None if x is None else x.cpu() for x in parts]])  # one list per process
    joined = []
    for column in zip(*every):
        filled = [x for x in column if x is not None and len(x)]  # an empty shard's (0, 0) fits no shape
        joined.append(None if column[0] is None else torch.cat(filled or column[:1]).to(accelerator.device))
    return joined


@torch.no_grad()
def domain_outputs(net, domain, accelerator, *, index: torch.Tensor | None = None, unlabeled=None,
                   features_at: torch.Tensor | None = None, stop=None, desc: str = "") -> Outputs:
    """`net`'s logits over the examples `index` of `domain` (default: those `evaluated`) and its
    G_f features (`embed`) over `features_at` (a subset of index), in eval mode, under the
    statistics of `unlabeled` (a domain's unlabeled training images; AdaBN's). A domain sharded
    over processes (its `world`) is scored a shard each and gathered; a one-process pass stops
    between batches on a stop signal (StopRequested)."""
    index = (evaluated(domain) if index is None else index).cpu()
    world, rank = getattr(domain, "world", 1), getattr(domain, "rank", 0)
    shards = index.tensor_split(world)
    mine = shards[rank]
    wanted = features_at.cpu() if features_at is not None else None
    stats = nullcontext()
    if unlabeled is not None:
        stats = net.evaluation_statistics(x for x, _ in unlabeled.batches_of(evaluated(unlabeled)))
    one_pass = wanted is not None and predicts_from_embedding(net)
    logits, labels, features = [], [], []
    was_training = net.training
    batches = progress.bar(domain.batches_of(mine), total=-(-len(mine) // domain.batch_size), desc=desc,
                           show=bool(desc) and accelerator.is_local_main_process)
    try:
        with stats, accelerator.autocast():
            net.eval()
            for part, (x, y) in zip(mine.split(domain.batch_size), batches):
                if stop_requested(stop, accelerator):
                    raise StopRequested
                keep = torch.isin(part, wanted) if wanted is not None else None
                if one_pass:
                    f = net.embed(x)
                    logits.append(net.classifier(f).float())
                else:
                    logits.append(net.predict(x).float())
                    f = net.embed(x[keep.to(x.device)]) if keep is not None and keep.any() else None
                    keep = None if f is None else keep
                if keep is not None and keep.any():
                    features.append((f[keep.to(f.device)] if one_pass else f).float().flatten(1))
                labels.append(y)
    finally:
        batches.close()
        net.train(was_training)
    device = accelerator.device
    logits = torch.cat(logits) if logits else torch.zeros(0, 0, device=device)
    labels = torch.cat(labels).to(device) if labels else torch.zeros(0, dtype=torch.long, device=device)
    feats, feats_index = None, None
    if wanted is not None:
        feats_index = index[torch.isin(index, wanted)]
        feats = torch.cat(features) if features else torch.zeros(0, 0, device=device)
    if world > 1:
        logits, labels, feats = gather_shards([logits, labels, feats], accelerator)
    return Outputs(index, logits, labels, feats, feats_index)


class Snapshot:
    """A model's outputs on the domains of a Split (by field name: 'test', 'source_test',
    'source_val', 'target') at its current weights, each domain passed through once: two names
    for one domain (the transductive target is both 'target' and 'test') share one pass.
    `features`: {name: example index} whose G_f features the readers will want; they are
    computed in the same pass."""

    def __init__(self, model, split, accelerator, stop=None, features: dict[str, torch.Tensor] | None = None):
        self.net = accelerator.unwrap_model(model)
        self.split, self.accelerator, self.stop = split, accelerator, stop
        self.features = features or {}
        self.passes: dict[int, Outputs] = {}

    def unlabeled_of(self, name: str):
        """The unlabeled images whose statistics the domain `name` is seen under."""
        adapting = self.split.target is not None
        if name in TARGET_SIDE:
            return self.split.target
        return self.split.train if adapting else None

    def __call__(self, name: str, index: torch.Tensor | None = None) -> Outputs:
        """The outputs of the domain `name` over `index` (default: its evaluated examples)."""
        domain = getattr(self.split, name)
        index = evaluated(domain) if index is None else index.cpu()
        done = self.passes.get(id(domain))
        if done is None or not done.covers(index):
            wanted = [v.cpu() for k, v in self.features.items() if getattr(self.split, k) is domain]
            scope = index if done is None else torch.cat([done.index, index]).unique()  # keep the widest pass
            done = domain_outputs(self.net, domain, self.accelerator, index=scope, unlabeled=self.unlabeled_of(name),
                                  features_at=torch.cat(wanted).unique() if wanted else None, stop=self.stop,
                                  desc=f"eval {domain.name}")
            self.passes[id(domain)] = done
        return done if torch.equal(done.index, index) else done.subset(index)

    def accuracy(self, name: str, num_classes: int) -> dict:
        """Accuracy and confusion matrix (true, predicted) over the domain's evaluated examples."""
        outputs = self(name)
        matrix = outputs.confusion(num_classes)
        total = int(matrix.sum())
        return {"acc": float(matrix.trace()) / max(total, 1), "total": total, "confusion": matrix.tolist()}


def merge_wanted(*wants: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Several readers' feature requests as one: per domain name, the union of their examples."""
    merged: dict[str, torch.Tensor] = {}
    for want in wants:
        for name, index in want.items():
            merged[name] = torch.cat([merged[name], index.cpu()]).unique() if name in merged else index.cpu()
    return merged

"""The training loop every method shares, on Hugging Face Accelerate.

`fit(config, model, accelerator, split)` trains a `Method` (dann/methods/) and evaluates it;
it knows nothing of backbones or datasets (the tests drive it with an MLP on two moons).
One epoch of training is `train_one_epoch`; each iteration is `train_step`: the method's loss
and one optimizer step, or, for a method that owns its update, the steps it takes through
`Optimize` (the same guard, clipping, precision and process sync for each). The run is cut
into the method's phases (`Method.phases`). An evaluation scores the target and source test
domains in one pass each (`dann.outputs.Snapshot`) and hands that pass to the caller's hook
(`on_evaluate`: the selection scores). The step never waits for the host: a non-finite loss
skips the update on the device (`NonFiniteGuard`) and is reported at the next check, every
--log_every steps and at each epoch's end, where the processes of a multi-process run also
agree on a stop signal.
"""
from __future__ import annotations

import dataclasses
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator

from dann import checkpoint
from dann.config import TrainConfig
from dann.data import cycle
from dann.datasets import Split, mean_class_accuracy
from dann.errors import UserError
from dann.optim import lr_at, make_optimizer, release_optimizer, restart, set_lr
from dann.outputs import Outputs, Snapshot, domain_outputs, size
from dann.progress import Clock, EpochProgress
from dann.signals import Interrupted, StopRequested


@dataclass
class TrainState:
    """Where training is (saved with checkpoints as progress.json). The schedules read
    p = step / total_steps, the `progress` every method's step receives.

    `partial` holds the running train-metric sums of an epoch stopped midway by a signal,
    so that the resumed epoch reports the same averages as an uninterrupted one.
    `pending_eval`: the last epoch is trained but not yet evaluated (a stop came between).
    """
    epoch: int = 0  # epochs completed
    step: int = 0
    history: list = field(default_factory=list)  # one record per epoch
    partial: dict = field(default_factory=dict)
    pending_eval: bool = False
    last_eval: dict = field(default_factory=dict)  # accuracies and target confusion matrix

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


class NonFiniteGuard:
    """Skips optimizer updates on the device once a loss is not finite, with no host sync.

    The flag is sticky: every later update is skipped too, so the weights stay those of the
    last good step until the host reads the flag at the next check. How the skip happens:
    - fp16 (Accelerate's GradScaler): the gradients are multiplied by NaN, so that the
      scaler's own inf/NaN check skips the step (it sets, then deletes, the fused kernel's
      `found_inf` itself: writing that attribute would be lost);
    - a fused optimizer otherwise: its `found_inf` is set, the hook GradScaler uses, and the
      kernel skips the update;
    - neither: the host looks before every update.
    """

    def __init__(self, accelerator: Accelerator, optimizer, start_step: int):
        self.accelerator, self.optimizer, self.start_step = accelerator, optimizer, start_step
        self.bad = torch.zeros((), device=accelerator.device)
        self.good_steps = torch.zeros((), dtype=torch.long, device=accelerator.device)
        inner = getattr(optimizer, "optimizer", optimizer)  # AcceleratedOptimizer wraps the torch one
        self.scaler = getattr(optimizer, "scaler", None)
        self.fused = inner.defaults.get("fused", False)

    def check(self, loss: torch.Tensor) -> None:
        """Record whether this step's loss is finite (before backward)."""
        bad = (~torch.isfinite(loss.detach())).float()
        if self.accelerator.num_processes > 1:  # one process's NaN reaches everyone's gradients
            bad = self.accelerator.reduce(bad, reduction="sum")
        self.bad = torch.maximum(self.bad, bad.clamp(max=1))
        if not self.fused and self.scaler is None:  # no device-side skip here: the host must look
            self.raise_if_bad()

    def count_iteration(self) -> None:
        """One more iteration done (whatever number of updates it took): good while no loss was bad."""
        self.good_steps += (self.bad == 0).long()

    def before_step(self, parameters) -> None:
        """Arm the skip for this update (after backward, before the optimizer step)."""
        if self.scaler is not None:
            grads = [p.grad for p in parameters if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, torch.where(self.bad > 0, torch.nan, 1.0))
        elif self.fused:
            getattr(self.optimizer, "optimizer", self.optimizer).found_inf = self.bad

    def raise_if_bad(self, folder: Path | None = None) -> None:
        if self.bad.item():
            raise UserError(nonfinite_message(self.start_step + int(self.good_steps.item()) + 1, folder))


def nonfinite_message(step: int, folder: Path | None) -> str:
    found = checkpoint.complete_checkpoints(folder) if folder else []
    keep = (f"the last good checkpoint is {found[-1]} (continue with --resume {found[-1]} and a lower --lr)"
            if found else "no checkpoint was saved (--checkpoint_every N saves them)")
    return f"the loss is not finite (nan or inf) at step {step}; stopped without updating the weights; {keep}"


class EvaluationHook:
    """What runs at each evaluation besides the accuracies (dann/run.py: the selection scores).
    `features_wanted` says, before the pass, which examples' G_f features the hook will read
    ({Split field: example index}); calling it gives the pass and returns values for the log."""

    def features_wanted(self, split: Split, final: bool) -> dict[str, torch.Tensor]:
        return {}

    def __call__(self, snapshot: Snapshot, final: bool) -> dict:
        return {}


# ---------------------------------------------------------------------------- training

@dataclass
class Span:
    """A phase's steps: [start, end) of the run."""
    name: str
    start: int
    end: int
    source: bool
    target: bool

    def progress(self, step: int) -> float:
        """p in [0, 1) over the phase: what the method and the lr schedule see."""
        return (step - self.start) / max(self.end - self.start, 1)


def spans(phases, total_steps: int) -> list[Span]:
    """The phases' steps: each its share of the run, the last one up to the end; empty ones dropped."""
    found, start, shares = [], 0, sum(phase.share for phase in phases)
    for i, phase in enumerate(phases):
        end = total_steps if i == len(phases) - 1 else start + round(phase.share / shares * total_steps)
        found.append(Span(phase.name, start, end, phase.source, phase.target))
        start = end
    return [s for s in found if s.end > s.start] or found[-1:]


@dataclass
class Run:
    """What one fit() trains with, passed to train_one_epoch."""
    config: TrainConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    accelerator: Accelerator
    split: Split
    guard: NonFiniteGuard
    log: callable
    stop: object
    folder: Path | None
    steps_per_epoch: int
    total_steps: int
    last_step: int
    phases: list[Span]
    on_evaluate: EvaluationHook = field(default_factory=EvaluationHook)
    quiet: bool = False
    streams: dict = field(default_factory=dict)  # 'source' / 'target': (batches, the step of the last one)
    clock: Clock = field(default_factory=Clock)  # what the ETA is measured on

    @property
    def net(self):
        """The method itself (the model is its DDP wrapper in a multi-process run)."""
        return self.accelerator.unwrap_model(self.model)

    def phase_at(self, step: int) -> Span:
        return next((s for s in self.phases if s.start <= step < s.end), self.phases[-1])

    def batch(self, kind: str, step: int) -> tuple:
        """The batch of the source or target stream at `step`: batch number `step` of the domain's
        endless shuffled sequence (dann.data.cycle), however many steps drew none (a phase
        without it), so that a resumed run draws what the uninterrupted one would."""
        stream, last = self.streams.get(kind, (None, None))
        if stream is None or last != step - 1:
            if kind == "source":
                stream = cycle(self.split.train, step)
            else:
                stream = cycle(self.split.target, step, self.net.target_views, with_index=True,
                               view_options=self.net.view_options)
        self.streams[kind] = (stream, step)
        return next(stream)


@dataclass
class EpochStart:
    """What a method's before_epoch may read (Method.before_epoch)."""
    run: Run
    epoch: int
    phase: str

    def target_outputs(self) -> Outputs:
        """Logits and G_f features of every unlabeled target training image, in eval mode, at the
        current weights (every process holds all of them); their labels are not for the method."""
        target = self.run.split.target
        every = torch.arange(size(target))
        outputs = domain_outputs(self.run.net, target, self.run.accelerator, index=every, features_at=every,
                                 stop=self.run.stop)
        outputs.labels = None
        return outputs


class Optimize:
    """One optimizer step on `loss`, as the loop takes it for a method that returns a loss: the
    non-finite guard, backward (through the precision's scaler), gradients averaged over the
    processes, clipping, the step. A method that owns its update calls it for each step it
    takes, naming the parameters that step updates (default: all; the others keep their
    gradient None, so SGD leaves them, weight decay and momentum included, as they are)."""

    def __init__(self, run: Run, target_index: torch.Tensor | None = None):
        self.run, self.target_index, self.metrics = run, target_index, {}

    def __call__(self, loss: torch.Tensor, parameters=None) -> None:
        run, accelerator = self.run, self.run.accelerator
        run.guard.check(loss)
        run.optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        every = [p for p in run.net.parameters() if p.requires_grad]
        chosen = every if parameters is None else list(parameters)
        if parameters is not None:
            keep = {id(p) for p in chosen}
            for p in every:
                if id(p) not in keep:
                    p.grad = None
        if accelerator.num_processes > 1:  # the method was called directly, not through DDP's wrapper
            average_gradients(chosen, accelerator)
        run.guard.before_step(chosen)
        if run.config.clip_grad:
            self.metrics["grad_norm"] = accelerator.clip_grad_norm_(chosen, run.config.clip_grad)
        run.optimizer.step()


def average_gradients(parameters, accelerator) -> None:
    """Every process's gradients replaced by their mean over the processes (what DDP does)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if grads:
        flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
        for g, mean in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(mean.view_as(g))


def sync_buffers(net, accelerator) -> None:
    """Every process takes the main process's buffers (batch-norm statistics), as DDP does before
    each forward pass; for methods that own their update, which bypass DDP's wrapper."""
    from accelerate.utils import broadcast

    for buffer in net.buffers():
        buffer.copy_(broadcast(buffer.clone(), from_process=0))


def train_step(run: Run, x_s, y_s, x_t, progress: float, target_index=None) -> dict:
    """One iteration: the method's loss and one update (backward, DDP's all-reduce, the
    non-finite guard, clipping, the optimizer step), or the updates of a method that owns
    them; returns the metrics to log."""
    net = run.net
    if net.owns_update:
        optimize = Optimize(run, target_index)
        with run.accelerator.autocast():
            metrics = net.update(x_s, y_s, x_t, progress, optimize)
        if run.accelerator.num_processes > 1:
            sync_buffers(net, run.accelerator)
        return {**metrics, **optimize.metrics}
    loss, metrics = run.model(x_s, y_s, x_t, progress)
    run.guard.check(loss)
    run.optimizer.zero_grad(set_to_none=True)
    run.accelerator.backward(loss)
    run.guard.before_step(run.model.parameters())
    if run.config.clip_grad:
        metrics["grad_norm"] = run.accelerator.clip_grad_norm_(run.model.parameters(), run.config.clip_grad)
    run.optimizer.step()
    return metrics


def train_one_epoch(run: Run, state: TrainState) -> None:
    """Train from state.step to the end of the epoch (or run.last_step); append the
    epoch's record (mean train metrics) to state.history."""
    config, accelerator = run.config, run.accelerator
    steps_per_epoch = run.steps_per_epoch
    epoch = state.epoch
    tensors = state.partial.get("tensor_keys", [])  # metrics summed on the device, the rest on the host
    sums = {k: torch.tensor(v, device=accelerator.device) if k in tensors else v
            for k, v in state.partial.get("sums", {}).items()}
    count, state.partial = state.partial.get("count", 0), {}
    start = state.step - epoch * steps_per_epoch
    end = min(steps_per_epoch, run.last_step - epoch * steps_per_epoch)
    if start == 0:  # a fresh epoch (a resumed one has what the method computed in its checkpoint)
        try:
            run.net.before_epoch(EpochStart(run, epoch, run.phase_at(state.step).name))
        except StopRequested:
            interrupt(run, state)
    bar = EpochProgress(run.clock, epoch=epoch + 1, epochs=config.epochs, step=state.step, end=end, start=start,
                        last_step=run.last_step, show=not run.quiet and accelerator.is_local_main_process)
    with bar:  # closed before anything else prints
        while state.step < min(run.last_step, (epoch + 1) * steps_per_epoch):
            phase = run.phase_at(state.step)
            if state.step == phase.start and phase is not run.phases[0]:
                restart(run.optimizer)  # a new phase starts from no momentum
            progress = phase.progress(state.step)
            lr = lr_at(config, progress, epoch, state.step)
            set_lr(run.optimizer, lr)
            x_s, y_s = run.batch("source", state.step) if phase.source else (None, None)
            x_t, index_t = None, None
            if phase.target and run.net.needs_target:
                x_t, _, index_t = run.batch("target", state.step)  # target labels: never used
            metrics = train_step(run, x_s, y_s, x_t, progress, index_t)
            run.guard.count_iteration()
            state.step += 1
            bar.update(1)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else v)
            count += 1
            at_check = state.step % config.log_every == 0 or state.step == run.last_step
            if at_check:
                run.guard.raise_if_bad(run.folder)
                logs = {f"train/{k}": float(v) / count for k, v in sums.items()}
                run.log({**logs, "train/lr": lr, "train/epoch": epoch}, state.step)
                bar.set_postfix({k.split("/")[1]: f"{v:.3f}" for k, v in logs.items()})
            if state.step >= run.last_step or state.step == (epoch + 1) * steps_per_epoch:
                break
            if stop_agreed(run, at_check):
                run.guard.raise_if_bad(run.folder)
                state.partial = {"sums": {k: float(v) for k, v in sums.items()}, "count": count,
                                 "tensor_keys": [k for k, v in sums.items() if torch.is_tensor(v)]}
                interrupt(run, state)
    run.guard.raise_if_bad(run.folder)
    if state.step == (epoch + 1) * steps_per_epoch:
        state.epoch += 1
    state.history.append({"epoch": epoch + 1, "step": state.step,
                          **{f"train/{k}": float(v) / max(count, 1) for k, v in sums.items()}})


def stop_agreed(run: Run, at_check: bool) -> bool:
    """Whether to stop for a SIGTERM/SIGINT now. One process: as soon as it arrives (a host
    flag, no sync). Several: all processes agree at checks only, so they stop at one step."""
    signalled = run.stop is not None and run.stop.signum is not None
    if run.accelerator.num_processes == 1:
        return signalled
    if not at_check:
        return False
    flag = torch.tensor(float(signalled), device=run.accelerator.device)
    return run.accelerator.reduce(flag, reduction="sum").item() > 0


def interrupt(run: Run, state: TrainState):
    """Save a checkpoint after a SIGTERM/SIGINT and raise signals.Interrupted."""
    signum = (run.stop.signum if run.stop is not None else None) or signal.SIGTERM
    name = signal.Signals(signum).name
    if run.folder is None:
        raise Interrupted(f"{name} at step {state.step}; no --output_dir, nothing saved", signum)
    path = checkpoint.save(run.accelerator, run.folder, state, run.config)
    raise Interrupted(
        f"{name} at step {state.step}: checkpoint saved to {path}; to continue, run the same "
        f"command with --resume auto --output_dir {run.config.output_dir}", signum)


def evaluate_epoch(run: Run, state: TrainState) -> None:
    """Target and source accuracy after an epoch (one pass over each domain, which the hook's
    scores read too), into its history record, the log and stdout."""
    split, accelerator = run.split, run.accelerator
    final = state.step >= run.last_step
    snapshot = Snapshot(run.model, split, accelerator, run.stop, run.on_evaluate.features_wanted(split, final))
    try:
        target = snapshot.accuracy("test", len(split.classes))
        source = snapshot.accuracy("source_test", len(split.classes))
        scores = run.on_evaluate(snapshot, final)  # select/*
    except StopRequested:
        interrupt(run, state)  # pending_eval stays set: the resumed run evaluates first
    record = state.history[-1]
    accuracies = {"eval/source_acc": source["acc"], "eval/target_acc": target["acc"],
                  "eval/source_mean_class_acc": mean_class_acc(source),
                  "eval/target_mean_class_acc": mean_class_acc(target)}
    record.update({**accuracies, **scores})
    state.last_eval = {"target_acc": target["acc"], "source_acc": source["acc"], "num_target": target["total"],
                       "num_source": source["total"], "confusion": target["confusion"],
                       "target_mean_class_acc": accuracies["eval/target_mean_class_acc"],
                       "source_mean_class_acc": accuracies["eval/source_mean_class_acc"]}
    run.log({**accuracies, **scores}, state.step)
    if not run.quiet:
        accelerator.print(f"epoch {record['epoch']}/{run.config.epochs} step {state.step}: "
                          + " ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float)))


def mean_class_acc(accuracy: dict) -> float:
    """The mean per-class accuracy of a Snapshot.accuracy (VisDA-2017's figure); 0 for no examples."""
    return mean_class_accuracy(accuracy["confusion"]) if accuracy["total"] else 0.0


def step_budget(config: TrainConfig, split: Split) -> tuple[int, int]:
    """(steps per epoch, the last step): --iters_per_epoch or a pass over the training domain,
    times --epochs, cut at --max_steps."""
    steps_per_epoch = config.iters_per_epoch or split.train.steps_per_epoch()
    total_steps = config.epochs * steps_per_epoch
    return steps_per_epoch, min(total_steps, config.max_steps) if config.max_steps else total_steps


def fit(config: TrainConfig, model, accelerator: Accelerator, split: Split, *, log=None, stop=None,
        state: TrainState | None = None, on_evaluate: EvaluationHook | None = None,
        quiet: bool = False) -> tuple[torch.nn.Module, dict]:
    """Train `model` (a Method) on `split`, evaluating every config.eval_every epochs and at
    the end; returns the prepared model and the results dict.

    log(values, step): where metrics go (default accelerator.log). stop: an object whose
    `signum` becomes a signal number when the run should stop (the scripts install
    `signals.StopOnSignal`); fit installs no signal handlers itself. on_evaluate: what else
    each evaluation computes from its pass (an EvaluationHook). With config.output_dir set,
    checkpoints go to <output_dir>/checkpoints: every config.checkpoint_every epochs and on a
    stop (then `signals.Interrupted` is raised); config.resume continues from one. A
    non-finite loss raises UserError. quiet: no progress bar and no epoch lines.
    """
    steps_per_epoch, last_step = step_budget(config, split)
    total_steps = config.epochs * steps_per_epoch  # p = step / total_steps
    model.setup(split, total_steps)
    optimizer = make_optimizer(model, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    state = state or TrainState()
    folder = checkpoint.checkpoint_dir(config.output_dir) if config.output_dir else None
    resume_from = checkpoint.find_resume(config.resume, config.output_dir)
    if resume_from:
        checkpoint.load(accelerator, resume_from, state, config)
    elif config.resume:
        accelerator.print(f"--resume {config.resume}: no checkpoint in {folder} yet, starting fresh")
    elif folder:
        checkpoint.check_fresh(config.output_dir)
    phases = spans(accelerator.unwrap_model(model).phases(), total_steps)
    run = Run(config, model, optimizer, accelerator, split, NonFiniteGuard(accelerator, optimizer, state.step),
              log or accelerator.log, stop, folder, steps_per_epoch, total_steps, last_step, phases,
              on_evaluate or EvaluationHook(), quiet)
    start_time = time.time()

    def checkpoint_if_due():  # after a whole number of --checkpoint_every epochs
        if (folder and config.checkpoint_every and state.step == state.epoch * steps_per_epoch
                and state.epoch % config.checkpoint_every == 0):
            checkpoint.save(accelerator, folder, state, config)

    model.train()
    while True:
        if state.pending_eval:
            evaluate_epoch(run, state)
            state.pending_eval = False
            checkpoint_if_due()
        if state.step >= last_step:
            break
        if stop_agreed(run, at_check=True):
            interrupt(run, state)
        train_one_epoch(run, state)
        state.pending_eval = state.epoch % config.eval_every == 0 or state.step >= last_step
        if not state.pending_eval:
            checkpoint_if_due()
    release_optimizer(optimizer)
    history, last = state.history, state.last_eval
    evaluated = [r for r in history if "eval/target_acc" in r]
    best = max(evaluated, key=lambda r: r["eval/target_acc"])
    return model, {
        "target_acc": last["target_acc"], "best_target_acc": best["eval/target_acc"], "best_epoch": best["epoch"],
        "source_acc": last["source_acc"], "num_target_eval": last["num_target"],
        "target_mean_class_acc": last.get("target_mean_class_acc"),
        "source_mean_class_acc": last.get("source_mean_class_acc"),
        "num_source_eval": last["num_source"], "confusion_matrix": last["confusion"], "steps": state.step,
        "epochs": history, "train_seconds": time.time() - start_time,
    }

"""The training loop shared by DANN and the source-only baseline, on Hugging Face Accelerate.

`run(config, method)` builds everything from flags and writes results.json; `fit(...)` is
the loop itself and knows nothing of AlexNet or PACS (the tests drive it with an MLP on
two moons). The two methods differ only in the step they plug in: `dann_step` or
`baseline_step`.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from tqdm.auto import tqdm

from dann import checkpoint, pacs, tracking
from dann.config import TrainConfig, default_output_dir
from dann.data import ImageTransform, LoaderDomain, TensorDomain, cycle
from dann.errors import UserError
from dann.model import build_model
from dann.schedules import alpha_at, lr_factor


# ---------------------------------------------------------------------------- the two steps

def dann_step(model, x_s, y_s, x_t, alpha: float) -> tuple[torch.Tensor, dict]:
    """The seed's three steps, summed into one loss so that backward (and DDP's gradient
    all-reduce) runs once; the gradients equal those of three separate backward calls."""
    class_logits = model(x_s)  # (1) source -> G_y
    cls_loss = F.cross_entropy(class_logits, y_s)
    d_s = model(x_s, alpha)  # (2) source -> R_alpha -> G_d, domain 0
    d_t = model(x_t, alpha)  # (3) target -> R_alpha -> G_d, domain 1
    zeros = torch.zeros(len(x_s), dtype=torch.long, device=x_s.device)
    ones = torch.ones(len(x_t), dtype=torch.long, device=x_t.device)
    domain_loss = F.cross_entropy(d_s, zeros) + F.cross_entropy(d_t, ones)
    domain_acc = torch.cat([d_s.argmax(1) == 0, d_t.argmax(1) == 1]).float().mean()
    metrics = {"class_loss": cls_loss.detach(), "domain_loss": domain_loss.detach(),
               "domain_acc": domain_acc.detach(),
               "class_acc": (class_logits.argmax(1) == y_s).float().mean().detach()}
    return cls_loss + domain_loss, metrics


def baseline_step(model, x_s, y_s) -> tuple[torch.Tensor, dict]:
    class_logits = model(x_s)
    cls_loss = F.cross_entropy(class_logits, y_s)
    return cls_loss, {"class_loss": cls_loss.detach(),
                      "class_acc": (class_logits.argmax(1) == y_s).float().mean().detach()}


# ---------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(model, domain: TensorDomain, accelerator: Accelerator) -> tuple[float, int]:
    """(accuracy, number of examples) over the whole domain, each example counted once
    across processes: every process scores a disjoint shard and the counts are summed."""
    model.eval()
    counts = torch.zeros(2, dtype=torch.long, device=accelerator.device)  # correct, total
    for x, y in domain.eval_batches():
        counts += torch.stack([(model(x).argmax(1) == y).sum(), torch.tensor(len(y), device=y.device)])
    model.train()
    correct, total = accelerator.reduce(counts, reduction="sum").tolist()
    return correct / max(total, 1), total


# ---------------------------------------------------------------------------- the loop

@dataclass
class Progress:
    """Where training is; drives the alpha and lr schedules (saved with checkpoints).

    `partial` holds the running train-metric sums of an epoch stopped midway by a signal,
    so that the resumed epoch reports the same averages as an uninterrupted one.
    """
    epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    partial: dict = field(default_factory=dict)

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def fit(config: TrainConfig, method: str, accelerator: Accelerator, model, train_domain,
        target_domain, source_eval=None, progress: Progress | None = None) -> dict:
    """Train `model` and evaluate it each epoch; returns the results dict.

    train_domain: labeled batches (the source, or the target for the upper bound).
    target_domain: the test set, and for DANN the unlabeled adaptation stream.
    source_eval: domain whose accuracy is reported as source_acc (default train_domain).
    With config.output_dir set, checkpoints go to <output_dir>/checkpoints: every
    config.checkpoint_every epochs and on SIGTERM/SIGINT (then `checkpoint.Interrupted` is
    raised); config.resume continues from one. A non-finite loss raises UserError before
    the weights are updated.
    """
    source_eval = source_eval or train_domain
    steps_per_epoch = train_domain.steps_per_epoch()
    total_steps = config.epochs * steps_per_epoch
    last_step = min(total_steps, config.max_steps) if config.max_steps else total_steps
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    progress = progress or Progress()
    folder = checkpoint.checkpoint_dir(config.output_dir) if config.output_dir else None
    resume_from = checkpoint.find_resume(config.resume, config.output_dir)
    if resume_from:
        checkpoint.load(accelerator, resume_from, progress, config)
    elif config.resume:
        accelerator.print(f"--resume {config.resume}: no checkpoint in {folder} yet, starting fresh")
    elif folder:
        checkpoint.check_fresh(config.output_dir)
    target_stream = cycle(target_domain, progress.step) if method == "dann" else None
    num_target = num_source = None

    bar = tqdm(total=last_step, initial=progress.step, disable=not accelerator.is_local_main_process,
               desc=f"{method} {train_domain.name}->{target_domain.name}", dynamic_ncols=True)
    start_time = time.time()
    model.train()
    with bar, checkpoint.StopOnSignal() as stop:  # the bar closes before an error prints
        while progress.step < last_step:
            epoch = progress.epoch
            sums = {k: torch.tensor(v, device=accelerator.device)
                    for k, v in progress.partial.get("sums", {}).items()}
            count, progress.partial = progress.partial.get("count", 0), {}
            start = progress.step - epoch * steps_per_epoch
            for x_s, y_s in train_domain.train_batches(epoch, start):
                p = progress.step / total_steps
                lr = config.lr * lr_factor(p, epoch, config.lr_schedule, config.step_size, config.gamma)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if method == "dann":
                    alpha = alpha_at(p, config.alpha, config.alpha_schedule)
                    x_t, _ = next(target_stream)  # target labels are never used in training
                    loss, metrics = dann_step(model, x_s, y_s, x_t, alpha)
                    metrics["alpha"] = torch.tensor(alpha)
                else:
                    loss, metrics = baseline_step(model, x_s, y_s)
                # One small all-reduce per step, so that every process stops together.
                bad_loss, stopping = should_stop(accelerator, loss, stop.signum is not None)
                if bad_loss:
                    raise UserError(nonfinite_message(loss, progress, folder))
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                optimizer.step()
                progress.step += 1
                bar.update(1)
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v.float()
                count += 1
                if progress.step % config.log_every == 0 or progress.step == last_step:
                    logs = {f"train/{k}": (v / count).item() for k, v in sums.items()}
                    accelerator.log({**logs, "train/lr": lr, "train/epoch": epoch}, step=progress.step)
                    bar.set_postfix({k.split("/")[1]: f"{v:.3f}" for k, v in logs.items()})
                if stopping and progress.step < min((epoch + 1) * steps_per_epoch, last_step):
                    progress.partial = {"sums": {k: v.item() for k, v in sums.items()}, "count": count}
                    interrupt(accelerator, folder, progress, config, stop.signum or signal.SIGTERM)
                if progress.step >= last_step:
                    break
            epoch_done = progress.step == (epoch + 1) * steps_per_epoch
            if epoch_done:
                progress.epoch += 1
            target_acc, num_target = evaluate(model, target_domain, accelerator)
            source_acc, num_source = evaluate(model, source_eval, accelerator)
            record = {"epoch": epoch + 1, "step": progress.step,
                      **{f"train/{k}": (v / max(count, 1)).item() for k, v in sums.items()},
                      "eval/source_acc": source_acc, "eval/target_acc": target_acc}
            progress.history.append(record)
            accelerator.log({"eval/source_acc": source_acc, "eval/target_acc": target_acc}, step=progress.step)
            accelerator.print(f"epoch {epoch + 1}/{config.epochs} step {progress.step}: "
                              + " ".join(f"{k}={v:.4f}" for k, v in record.items()
                                         if isinstance(v, float)))
            if folder and epoch_done and config.checkpoint_every and progress.epoch % config.checkpoint_every == 0:
                checkpoint.save(accelerator, folder, progress, config)
            # A signal at the epoch's last step or during evaluation: stop here, checkpointed.
            if progress.step < last_step and should_stop(accelerator, None, stop.signum is not None)[1]:
                interrupt(accelerator, folder, progress, config, stop.signum or signal.SIGTERM)
    if num_target is None:  # resumed from the last checkpoint: nothing left to train
        num_target = evaluate(model, target_domain, accelerator)[1]
        num_source = evaluate(model, source_eval, accelerator)[1]
    history = progress.history
    return {
        "target_acc": history[-1]["eval/target_acc"],
        "best_target_acc": max(r["eval/target_acc"] for r in history),
        "best_epoch": max(history, key=lambda r: r["eval/target_acc"])["epoch"],
        "source_acc": history[-1]["eval/source_acc"],
        "num_target_eval": num_target,
        "num_source_eval": num_source,
        "steps": progress.step,
        "epochs": history,
        "train_seconds": time.time() - start_time,
        "model": model,
    }


def should_stop(accelerator: Accelerator, loss: torch.Tensor | None, signalled: bool) -> tuple[bool, bool]:
    """(some process has a non-finite loss, some process got SIGTERM/SIGINT), agreed by all."""
    bad = torch.zeros((), device=accelerator.device) if loss is None else (~torch.isfinite(loss.detach())).float()
    flags = torch.stack([bad, torch.tensor(float(signalled), device=accelerator.device)])
    bad, signalled = accelerator.reduce(flags, reduction="sum").tolist()
    return bad > 0, signalled > 0


def nonfinite_message(loss: torch.Tensor, progress: Progress, folder: Path | None) -> str:
    found = checkpoint.complete_checkpoints(folder) if folder else []
    keep = (f"the last good checkpoint is {found[-1]} (continue with --resume {found[-1]} and a lower --lr)"
            if found else "no checkpoint was saved (--checkpoint_every N saves them)")
    return (f"the loss is {loss.item()} at step {progress.step + 1} (epoch {progress.epoch + 1}); "
            f"stopped before updating the weights; {keep}")


def interrupt(accelerator: Accelerator, folder: Path | None, progress: Progress, config: TrainConfig,
              signum: int):
    """Save a checkpoint after a SIGTERM/SIGINT and raise checkpoint.Interrupted."""
    name = signal.Signals(signum).name
    if folder is None:
        raise checkpoint.Interrupted(f"{name} at step {progress.step}; no --output_dir, nothing saved", signum)
    path = checkpoint.save(accelerator, folder, progress, config)
    raise checkpoint.Interrupted(
        f"{name} at step {progress.step}: checkpoint saved to {path}; to continue, run the same "
        f"command with --resume auto --output_dir {config.output_dir}", signum)


# ---------------------------------------------------------------------------- from flags

def make_accelerator(config: TrainConfig) -> Accelerator:
    mixed_precision = config.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION")
    if not mixed_precision:  # plain `python train_dann.py` on a GPU: bf16 where supported
        gpu = torch.cuda.is_available() and not config.cpu
        mixed_precision = "bf16" if gpu and torch.cuda.is_bf16_supported() else "no"
    trackers = {"none": None, "all": ["wandb", "tensorboard"]}.get(config.report_to, config.report_to)
    return Accelerator(cpu=config.cpu, mixed_precision=mixed_precision, log_with=trackers,
                       project_dir=config.output_dir or None,
                       dynamo_backend="inductor" if config.compile else "no")


def use_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """--channels_last: 'on', 'off', or 'auto' = on for CUDA devices."""
    return config.channels_last == "on" or (config.channels_last == "auto" and device.type == "cuda")


def choose_data_path(config: TrainConfig, files: list[pacs.DomainFiles], accelerator: Accelerator) -> str:
    """'tensor' when the decoded domains fit in half the free memory of this process's device."""
    if config.data_path != "auto":
        return config.data_path
    needed = sum(len(f.paths) for f in files) * 3 * pacs.BASE_SIZE ** 2
    if accelerator.device.type == "cuda":
        free = torch.cuda.mem_get_info(accelerator.device)[0]
    else:
        free = psutil.virtual_memory().available / max(accelerator.state.num_processes, 1)
    return "tensor" if needed < free / 2 else "loader"


def load_domains(config: TrainConfig, names: list[str], accelerator: Accelerator,
                 channels_last: bool) -> tuple[dict[str, TensorDomain], str, list[str], list[str]]:
    """Build a TensorDomain or LoaderDomain per domain name, sharded for this process;
    also returns the data path, the class names and the image files left out as unreadable."""
    with accelerator.main_process_first():  # one download / one decode, then the cache
        if accelerator.is_main_process:
            pacs.ensure_pacs(config.data_root)
        files = [pacs.list_domain(config.data_root, name) for name in names]
        classes = pacs.check_same_classes(files)
        data_path = choose_data_path(config, files, accelerator)
        transform = ImageTransform(accelerator.device, channels_last)
        common = dict(batch_size=config.batch_size, seed=config.seed, rank=accelerator.process_index,
                      world=accelerator.num_processes, transform=transform, augment=config.augment)
        domains, skipped = {}, []
        workers = config.num_workers if accelerator.is_main_process else 1
        for f in files:
            if f.ignored and accelerator.is_main_process:
                print(f"note: ignored {len(f.ignored)} non-image file(s) in {config.data_root}/{f.name}, "
                      f"e.g. {f.ignored[0]}", file=sys.stderr)
            if data_path == "tensor":
                images, kept = pacs.decode_domain(f, config.cache_dir, workers, config.skip_bad_images)
                domains[f.name] = TensorDomain(f.name, torch.from_numpy(images.copy()).to(accelerator.device),
                                               pacs.labels_tensor(kept), **common)
            else:  # the validation pass: a bad file is found now, not mid-epoch
                kept = pacs.check_domain(f, config.cache_dir, workers, config.skip_bad_images)
                domains[f.name] = LoaderDomain(kept, device=accelerator.device,
                                               num_workers=config.num_workers, **common)
            skipped += [str(p) for p in sorted(set(f.paths) - set(kept.paths))]
    return domains, data_path, classes, skipped


def with_seed(domain, seed: int):
    """The same domain (same tensors), shuffled and augmented with another seed."""
    domain = copy.copy(domain)
    domain.seed = seed
    return domain


def run(config: TrainConfig, method: str) -> dict:
    """Train one model per target and seed from flags; write results.json, the final
    weights and the figures to output_dir (a subfolder per model when there are several)."""
    wall_start = time.time()
    accelerator = make_accelerator(config)
    if config.resume not in ("", "auto") and not config.output_dir:  # continue in the run's folder
        config.output_dir = checkpoint.run_dir_of(config.resume)
    if not config.output_dir:  # one name for all processes, chosen by the main one
        config.output_dir = broadcast_object_list([default_output_dir(config, method)])[0]
    output_dir = Path(config.output_dir)
    channels_last = use_channels_last(config, accelerator.device)

    domains, data_path, classes, skipped = load_domains(
        config, list(dict.fromkeys([config.source, *config.targets])), accelerator, channels_last)
    tracking.init_tracking(accelerator, config, dataclasses.asdict(config))
    runs, step_offset = [], 0
    for target in config.targets:  # --target cartoon,sketch: cross-domain validation
        for seed in config.seed_list:  # --seeds 0,1,2: final runs
            prefix = tracking.model_prefix(target, seed, config)
            one = dataclasses.replace(config, target=target, seed=seed, seeds="",
                                      output_dir=str(output_dir / prefix))  # own checkpoints
            # Seed before the model is built: the initial weights (of the new last layers, or
            # all of them with --pretrained none) and dropout masks then repeat from run to run.
            set_seed(seed)
            with accelerator.main_process_first():
                model = build_model(config.pretrained, len(classes), discriminator=method == "dann")
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            source, test = with_seed(domains[config.source], seed), with_seed(domains[target], seed)
            train = test if config.train_on == "target" else source
            log_to = tracking.PrefixedLog(accelerator, prefix, step_offset) if prefix else accelerator
            results = fit(one, method, log_to, model, train, test, source_eval=source)
            model = results.pop("model")
            model_dir = output_dir / prefix
            results.update(tracking.end_of_run_figures(accelerator, model, source, test, classes,
                                                       one, model_dir, prefix))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                model_dir.mkdir(parents=True, exist_ok=True)
                accelerator.save_model(model, model_dir)  # model.safetensors
            runs.append({"target": target, "seed": seed, **results})
            step_offset += results["steps"]
            accelerator.free_memory()  # the next model starts clean
            del model

    summary = tracking.summarize(runs)
    tracking.log_summary(accelerator, summary)
    results = {"method": method, "config": dataclasses.asdict(config), **summary,
               **(runs[0] if len(runs) == 1 else {}), "runs": runs,
               "classes": classes, "data_path": data_path, "skipped_images": skipped,
               "num_processes": accelerator.num_processes,
               "mixed_precision": accelerator.mixed_precision,
               "wall_seconds": time.time() - wall_start}
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "results.json").write_text(json.dumps(results, indent=2))
        for r in runs:
            accelerator.print(f"{r['target']} seed {r['seed']}: target_acc={r['target_acc']:.4f} "
                              f"best_target_acc={r['best_target_acc']:.4f} source_acc="
                              f"{r['source_acc']:.4f} ({r['num_target_eval']} target images)")
        extra = "".join(f" {k}={summary[k]:.4f}" for k in summary if k.startswith("xdomain/"))
        accelerator.print(f"target_acc={summary['target_acc']:.4f} +/- {summary['target_acc_std']:.4f}"
                          f"{extra} -> {output_dir}/results.json")
    accelerator.end_training()
    return results

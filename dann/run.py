"""One training run from flags: check them, fetch and decode the data, build the method,
train a model per target and seed with the shared loop (`dann.train.fit`), write
results.json, the weights and the figures.

Everything a user can get wrong (flags, paths, domain names, weights files, input sizes)
is checked before any image is decoded. Errors found by the main process (a failed
download, a bad image) reach the other processes, which then exit quietly.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed

from dann import checkpoint, datasets, figures, methods, progress, selection, tracking
from dann import first_look as look
from dann.backbones import is_weights_name
from dann.config import TrainConfig, default_output_dir, with_method
from dann.errors import UserError, is_main_process, note, os_reason, unwritable, warn
from dann.outputs import Snapshot, merge_wanted
from dann.signals import Interrupted, StopRequested
from dann.train import EvaluationHook, TrainState, fit, step_budget

GPU_EPOCHS, CPU_EPOCHS = 30, 1  # --epochs 0: the homework's run on a GPU, a first look on a CPU


def make_accelerator(config: TrainConfig) -> Accelerator:
    gpu = uses_gpu(config)
    mixed_precision = config.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION")
    if not gpu:
        asked_bf16 = config.mixed_precision == "bf16"  # the flag, not the accelerate config's GPU default
        if asked_bf16 and cpu_has_native_bf16():
            mixed_precision = "bf16"
        else:
            if mixed_precision not in (None, "", "no"):
                note(f"training in fp32 on the CPU, not {mixed_precision}: "
                     + ("bf16 needs a CPU with native bf16 (AMX), which this one lacks"
                        if asked_bf16 else "on a CPU only --mixed_precision bf16 asks for it (CPUs with AMX)"))
            mixed_precision = "no"
    elif not mixed_precision:  # plain `python train_dann.py` on a GPU: bf16 where supported
        mixed_precision = "bf16" if torch.cuda.is_bf16_supported() else "no"
    trackers = {"none": None, "all": ["wandb", "tensorboard"]}.get(config.report_to, config.report_to)
    return Accelerator(cpu=not gpu, mixed_precision=mixed_precision, log_with=trackers,
                       project_dir=config.output_dir or None,
                       dynamo_backend="inductor" if config.compile else "no")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies in bf16 natively (Intel AMX): there bf16 autocast trains
    the digits table 2.26x faster than fp32 (docs/BENCHMARKS.md); elsewhere it is
    several times slower, so a CPU run takes bf16 only when asked and only here."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(amx and amx())


def use_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """--channels_last: 'on', 'off', or 'auto' = on for CUDA devices."""
    return config.channels_last == "on" or (config.channels_last == "auto" and device.type == "cuda")


def on_main_first(accelerator: Accelerator, fn, others_too: bool = True):
    """fn() on the main process, then (others_too) on the others: a download or decode runs
    once, the others read its cache. A UserError of the main process is raised on every
    process, so that none waits at a barrier for a process that has stopped."""
    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = fn()
        except UserError as e:
            error = str(e)
    if accelerator.num_processes > 1:
        error = broadcast_object_list([error])[0]  # also the barrier the others wait at
    if error:
        raise UserError(error)
    return result if accelerator.is_main_process or not others_too else fn()


def uses_gpu(config: TrainConfig) -> bool:
    """Whether this run trains on a GPU (the same rule the Accelerator is built with)."""
    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return torch.cuda.is_available() and not config.cpu and not forced_cpu


def resolve(config: TrainConfig, dataset) -> TrainConfig:
    """The flags whose default depends on the machine or the dataset, settled once before
    anything is built (the settings are read-only after): --epochs, --num_workers,
    --source/--target, --output_dir."""
    changes = {}
    if config.epochs == 0:
        changes["epochs"] = GPU_EPOCHS if uses_gpu(config) else CPU_EPOCHS
        if changes["epochs"] == CPU_EPOCHS:
            note(f"no GPU: --epochs defaults to {CPU_EPOCHS} here, a first look (the homework's run is "
                 f"--epochs {GPU_EPOCHS}, the default on a GPU)")
    if config.num_workers == -1:
        changes["num_workers"] = datasets.default_workers()
    for flag in ("tsne", "save_model"):  # the quick check (--max_steps) skips them unless asked
        if getattr(config, flag) is None:
            changes[flag] = not config.max_steps or (flag == "save_model" and config.log_model)
    changes["source"], changes["target"] = datasets.check_domains(dataset, config)
    config = dataclasses.replace(config, **changes)
    if config.resume not in ("", "auto") and not config.output_dir:  # continue in the run's folder
        config = dataclasses.replace(config, output_dir=checkpoint.run_dir_of(config.resume))
    if not config.output_dir:
        config = dataclasses.replace(config, output_dir=default_output_dir(config))
    return config


def check_batch(config: TrainConfig, accelerator: Accelerator) -> None:
    if config.batch_scope == "global" and config.batch_size % accelerator.num_processes:
        raise UserError(f"--batch_size {config.batch_size} with --batch_scope global must divide by "
                        f"the {accelerator.num_processes} processes")


def check_batch_fits(config: TrainConfig, splits: dict, per_process: int, world: int) -> None:
    """A step's batch must fit in each domain it is drawn from: a larger one repeats images within
    a batch (--batch_size 100000 on 5,000 digits tried to allocate 20 GB)."""
    for split in splits.values():
        for domain in (split.train, split.target):
            if domain is None or per_process * world <= len(domain):
                continue
            held = (f" (after --source_val {config.source_val} held some out)"
                    if domain is split.train and split.source_val is not None else "")
            over = f" ({per_process * world} images a step over {world} processes)" if world > 1 else ""
            limit = len(domain) if config.batch_scope == "global" else len(domain) // world
            raise UserError(f"--batch_size {config.batch_size}{over} is larger than the {len(domain)} training images "
                            f"of {domain.name}{held}; choose --batch_size {limit} or less")


def check_cache_dir(config: TrainConfig) -> None:
    """A --cache_dir given must be a folder this run can make (a full disk is met later, where the
    cache falls back to memory)."""
    if config.cache_dir:
        try:
            Path(config.cache_dir).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(unwritable("--cache_dir", config.cache_dir, e)) from None


def per_process_batch(config: TrainConfig, accelerator: Accelerator) -> int:
    if config.batch_scope == "global":
        return config.batch_size // accelerator.num_processes
    return config.batch_size


def build_model(config: TrainConfig, num_classes: int):
    """--method's networks, G_f and G_y from --source_model when given."""
    model = methods.build(config, num_classes)
    if config.source_model:
        load_source_model(model, config.source_model, config.backbone)
    return model


def load_source_model(model, path: str, backbone: str) -> None:
    """G_f and G_y (and the bottleneck, if any) from a trained model's model.safetensors (a run
    folder or the file); the method's other parts keep their initialization. Read as tensors only."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(path) / "model.safetensors" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise UserError(f"--source_model {path}: no model.safetensors there; give the folder of a run saved "
                        f"with --save_model (e.g. train_baseline.py's) or its model.safetensors")
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise UserError(f"--source_model {file}: not a readable safetensors file ({e}); give a model.safetensors "
                        f"written by this project") from None
    own = {k: v for k, v in model.state_dict().items() if k.startswith(("features.", "classifier."))}
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(fits) < len(own):
        missing = [k for k in own if k not in fits]
        raise UserError(f"--source_model {file}: its G_f and G_y do not fit this run's --backbone {backbone} "
                        f"({len(missing)} tensors missing or of another shape, e.g. {missing[0]}); train the source "
                        f"model with the same --backbone and --bottleneck_dim")
    model.load_state_dict(fits, strict=False)


def asked_processes(environ: dict, launcher_argv: list[str]) -> int:
    """How many processes `accelerate launch` was asked for when its one-process launcher started
    this one (0 if not: another launcher, or one process asked for). Without --multi_gpu (and with
    its own --cpu, which --multi_gpu refuses) `accelerate launch --num_processes N` runs the script
    once: it sets ACCELERATE_USE_CPU, and MASTER_ADDR/MASTER_PORT when N > 1, but no WORLD_SIZE.
    N is read from the launcher's command line, or from its --config_file."""
    if "ACCELERATE_USE_CPU" not in environ or "WORLD_SIZE" in environ or "MASTER_PORT" not in environ:
        return 0
    flags = dict(arg.split("=", 1) for arg in launcher_argv if arg.startswith("--") and "=" in arg)
    flags.update(zip(launcher_argv, launcher_argv[1:]))
    asked = flags.get("--num_processes")
    if asked is None and flags.get("--config_file"):
        import yaml

        try:
            asked = (yaml.safe_load(Path(flags["--config_file"]).read_text()) or {}).get("num_processes")
        except (OSError, yaml.YAMLError, AttributeError):
            asked = None
    try:
        return int(asked) if int(asked) > 1 else 0
    except (TypeError, ValueError):
        return 0


def warn_if_fewer_processes(num_processes: int) -> None:
    """One line when `accelerate launch` was asked for N processes and started one (Accelerate
    says nothing)."""
    import psutil

    try:
        launcher = psutil.Process(os.getppid()).cmdline()
    except psutil.Error:
        launcher = []
    asked = asked_processes(dict(os.environ), launcher)
    if asked > num_processes:
        warn(f"`accelerate launch` was asked for {asked} processes but started {num_processes}: without --multi_gpu "
             f"it starts one (and its --cpu refuses --multi_gpu); for {asked} processes, e.g. on a CPU: "
             f"accelerate launch --multi_gpu --num_processes {asked} train_dann.py --cpu ...")


def resolved_settings(config: TrainConfig, accelerator: Accelerator, split) -> dict:
    """What the flags became on this machine, for the start-up line and the trackers' config:
    processes, device, precision, batches, the step budget of each model, models, output folder."""
    steps_per_epoch, last_step = step_budget(config, split)
    per_process = per_process_batch(config, accelerator)
    device = accelerator.device
    return {"num_processes": accelerator.num_processes, "device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
            "precision": {"no": "fp32"}.get(accelerator.mixed_precision, accelerator.mixed_precision),
            "per_process_batch": per_process, "global_batch": per_process * accelerator.num_processes,
            "steps_per_epoch": steps_per_epoch, "total_steps": last_step,
            "num_models": len(config.targets) * len(config.seed_list), "output_dir": config.output_dir}


def startup_line(config: TrainConfig, settings: dict) -> str:
    """e.g. 'start: 1 process on cpu, fp32, global batch 64 (64 per process), 50 steps per epoch,
    500 steps (10 epochs) -> runs/...'."""
    def count(n: int, noun: str) -> str:
        return f"{n} {noun}{'' if n == 1 else 'es' if noun.endswith('s') else 's'}"

    models = settings["num_models"]
    budget = count(settings["total_steps"], "step") + (f" (--max_steps {config.max_steps})" if config.max_steps
                                                         else f" ({count(config.epochs, 'epoch')})")
    if models > 1:
        seeds = ",".join(map(str, config.seed_list))
        budget += f" per model x {models} models (targets {config.target}; seeds {seeds})"
    device = settings["device"] + (f" ({settings['device_name']})" if settings["device_name"] else "")
    return (f"start: {count(settings['num_processes'], 'process')} on {device}, {settings['precision']}, "
            f"global batch {settings['global_batch']} ({settings['per_process_batch']} per process), "
            f"{count(settings['steps_per_epoch'], 'step')} per epoch, {budget} -> {settings['output_dir']}")


def check_pretrained(config: TrainConfig) -> None:
    """A missing weights file is reported before anything is downloaded or decoded (a weights
    name, e.g. IMAGENET1K_V2, is the backbone's to check)."""
    if (config.pretrained not in ("imagenet", "none") and not is_weights_name(config.pretrained)
            and not Path(config.pretrained).is_file()):
        raise UserError(f"--pretrained {config.pretrained}: no such file; give 'imagenet', 'none' "
                        f"or the path of a weights file")


def with_seed(domain, seed: int):
    """The same domain (same tensors), shuffled and augmented with another seed."""
    if domain is None:
        return None
    domain = copy.copy(domain)
    domain.seed = seed
    return domain


def run(config: TrainConfig, stop=None) -> dict:
    """Train one model per target and seed from flags; write results.json, the final
    weights and the figures to output_dir (a subfolder per model when there are several).
    stop: see dann.train.fit (the scripts pass a signals.StopOnSignal)."""
    wall_start = time.time()
    progress.set_mode(config.progress)
    dataset = datasets.build(config)
    config = resolve(config, dataset)
    check_pretrained(config)
    check_cache_dir(config)
    accelerator = make_accelerator(config)
    check_batch(config, accelerator)
    warn_if_fewer_processes(accelerator.num_processes)
    output_dir = Path(config.output_dir)
    # Refuse a second live run writing in the same folder.
    created = not output_dir.exists()
    lock = on_main_first(accelerator, lambda: checkpoint.lock_run_dir(output_dir), others_too=False)
    try:
        if not config.resume:  # an earlier run's results or checkpoints are never overwritten unasked
            on_main_first(accelerator, lambda: checkpoint.check_fresh(output_dir), others_too=False)
        return train_all(config, accelerator, dataset, stop, wall_start)
    finally:
        if lock is not None:
            checkpoint.release_run_dir(lock, output_dir, created)


def first_look(config: TrainConfig, stop=None) -> tuple[dict, dict]:
    """--first_look: the source-only baseline, then --method, on the same data, budget and seed
    (dann/first_look.py's recipes), in <output_dir>/source_only and <output_dir>/<method>;
    prints their target accuracies side by side."""
    base = config.output_dir or default_output_dir(config, name="first_look")
    baseline = run(source_only_config(config, output_dir=f"{base}/source_only"), stop)
    adapted = run(dataclasses.replace(config, first_look=False, output_dir=f"{base}/{config.method}"), stop)
    if is_main_process():
        steps = adapted["runs"][0]["steps"]
        print(f"first look: {adapted['config']['source']} -> {adapted['config']['target']} ({config.dataset}, "
              f"--backbone {config.backbone}, {steps} steps, seed {config.seed}), target accuracy:\n"
              f"  source only  {100 * baseline['target_acc']:5.1f}%\n"
              f"  {config.method:<11}  {100 * adapted['target_acc']:5.1f}%  "
              f"({100 * (adapted['target_acc'] - baseline['target_acc']):+.1f} points) -> {base}")
    return baseline, adapted


def source_only_config(config: TrainConfig, output_dir: str) -> TrainConfig:
    """--first_look's source-only run: the table's source-only row. The method's recipe may set
    backbone flags that row does not (DANN's bottleneck); those go back to their defaults, unless
    the command line gave them another value."""
    method_recipe, baseline_recipe = look.RECIPES.get(config.method, {}), look.RECIPES["baseline"]
    defaults = type(config.backbone_hp)()
    reset = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)
             if f.name in method_recipe and f.name not in baseline_recipe
             and getattr(config.backbone_hp, f.name) == method_recipe[f.name]}
    return with_method(config, "baseline", first_look=False, output_dir=output_dir,
                       backbone_hp=dataclasses.replace(config.backbone_hp, **reset))


class Evaluations(EvaluationHook):
    """What a run computes at each evaluation from its pass: the selection scores that train
    nothing; at the last one, also the features the end-of-run scores and the t-SNE read, so
    that the end of a run passes each domain through the model once (kept in `last`)."""

    def __init__(self, config: TrainConfig):
        self.config, self.last = config, None

    def features_wanted(self, split, final: bool) -> dict:
        if not final:
            return {}
        return merge_wanted(selection.features_wanted(self.config, split), figures.features_wanted(self.config, split))

    def __call__(self, snapshot: Snapshot, final: bool) -> dict:
        self.last = snapshot if final else None
        return selection.during_training(snapshot, self.config)


@dataclass
class Trained:
    """One model at the end of its run: its record for results.json, and what its files are made of."""
    record: dict
    model: torch.nn.Module
    split: object
    tsne_sample: dict | None
    model_dir: Path
    prefix: str


def train_model(config: TrainConfig, model, accelerator: Accelerator, split, prefix: str, log,
                channels_last: bool, stop) -> Trained:
    """Train one model (one target, one seed) in <output_dir>/<prefix> (its checkpoints) and score
    it; log(values, step): its trackers. A stop signal during the end-of-run scores saves a
    checkpoint of the trained model and raises Interrupted: the resumed run only scores (a run
    that ended without its scores would read as a success)."""
    model_dir = Path(config.output_dir) / prefix
    config = dataclasses.replace(config, output_dir=str(model_dir))  # its own checkpoints
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # Every process its own dropout and augmentation stream (seed + rank); the initial
    # weights are the same everywhere, as DDP requires.
    set_seed(config.seed, device_specific=True)
    split = dataclasses.replace(split, **{k: with_seed(getattr(split, k), config.seed)
                                          for k in ("train", "target", "test", "source_test")})
    evaluations, state = Evaluations(config), TrainState()
    model, results = fit(config, model, accelerator, split, log=log, stop=stop, on_evaluate=evaluations, state=state)
    # the last evaluation's pass; a run resumed after it (stopped during the end-of-run scores) makes its own
    snapshot = evaluations.last or Snapshot(model, split, accelerator, stop, evaluations.features_wanted(split, True))
    try:
        results.update(selection.end_of_run(config, snapshot, results["steps"], channels_last, stop, log))
        sample = figures.tsne_inputs(config, snapshot)
    except StopRequested:
        signum = stop.signum if stop is not None and stop.signum else signal.SIGTERM
        path = checkpoint.save(accelerator, checkpoint.checkpoint_dir(model_dir), state, config)
        raise Interrupted(f"{signal.Signals(signum).name} during the end-of-run scores: checkpoint saved to {path}; "
                          f"to continue, run the same command with --resume auto --output_dir {model_dir}",
                          signum) from None
    return Trained(results, model, split, sample, model_dir, prefix)


def save_files(trained: Trained, config: TrainConfig, accelerator: Accelerator) -> tuple[dict, list[str]]:
    """A trained model's figures and weights (--save_model), after its results: the paths of the
    figures written, and what could not be saved, each with its reason (the run goes on)."""
    drawn, failed = figures.write_figures(accelerator, trained.split, trained.record["confusion_matrix"],
                                          trained.tsne_sample, config, trained.model_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and config.save_model:
        failed += save_weights(accelerator, trained.model, trained.model_dir)
    accelerator.free_memory()  # the next model starts clean
    return drawn, [f"{trained.prefix}/{name}" if trained.prefix else name for name in failed]


def save_weights(accelerator: Accelerator, model, folder: Path) -> list[str]:
    """model.safetensors in `folder`, written whole or not at all; [what failed] if it could not be."""
    tmp = folder / f".model.{os.getpid()}.partial"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        accelerator.save_model(model, tmp)
        for file in tmp.iterdir():
            file.replace(folder / file.name)
    except Exception as e:  # noqa: BLE001 -- OSError, or safetensors' own error on a full disk
        return [f"model.safetensors ({os_reason(e)})"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return []


def write_results(results: dict, output_dir: Path, accelerator) -> str:
    """results.json, written whole (a reader never sees half of it), by the main process; what
    failed, or ''."""
    if not accelerator.is_main_process:
        return ""
    path = output_dir / "results.json"
    tmp = path.with_name(f".results.json.{os.getpid()}.partial")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(path)
    except OSError as e:
        return f"results.json ({os_reason(e)})"
    finally:
        tmp.unlink(missing_ok=True)
    return ""


def model_line(r: dict) -> str:
    mean_class = "" if r.get("target_mean_class_acc") is None else \
        f" target_mean_class_acc={r['target_mean_class_acc']:.4f}"
    return (f"{r['target']} seed {r['seed']}: target_acc={r['target_acc']:.4f} best_target_acc="
            f"{r['best_target_acc']:.4f} source_acc={r['source_acc']:.4f}{mean_class} "
            f"({r['num_target_eval']} target images)")


def summary_line(summary: dict, output_dir: Path, dataset: str, headline: str = "acc") -> str:
    """The run's summary; where the dataset's papers report the mean per-class accuracy
    (VisDA-2017), that figure leads."""
    def value(key: str) -> str:
        return f"{key}={summary[key]:.4f}" + (f" +/- {summary[f'{key}_std']:.4f}" if summary["num_seeds"] > 1 else "")

    lead = value("target_acc")
    if headline == "mean_class_acc":
        lead = f"{value('target_mean_class_acc')} (mean per-class accuracy: the figure {dataset} papers report) {lead}"
    extra = "".join(f" {k}={summary[k]:.4f}" for k in summary if k.startswith("xdomain/"))
    return f"{lead}{extra} -> {output_dir}/results.json"


def not_saved_error(failed: list[str], output_dir: Path) -> UserError:
    """The one line for the files a finished run could not write (results.json kept if it could be)."""
    kept = ("the results are printed above" if any(f.startswith("results.json") for f in failed)
            else f"{output_dir}/results.json holds the results")
    return UserError(f"not saved: {', '.join(failed)}; {kept}; free disk space, then run the same command "
                     f"with --resume auto to write them")


def train_all(config: TrainConfig, accelerator: Accelerator, dataset, stop, wall_start: float) -> dict:
    """The rest of `run`, in the locked output folder: data, models, results."""
    output_dir = Path(config.output_dir)
    names = list(dict.fromkeys([config.source, *config.targets]))
    on_main_first(accelerator, lambda: dataset.prepare(names))  # downloads
    classes = dataset.classes(names)
    if len(classes) < 2:
        raise UserError(f"--dataset {config.dataset}: {', '.join(names)} hold one class ({''.join(classes)}): there is "
                        f"nothing to classify; give domains with two classes or more")
    # The first model is built before any image is decoded: a bad weights file or an input
    # size the backbone cannot take is reported now. Seeded first: initial weights and
    # dropout masks then repeat from run to run.
    set_seed(config.seed_list[0])
    first_model = on_main_first(accelerator, lambda: build_model(config, len(classes)))
    channels_last = use_channels_last(config, accelerator.device)
    batch_config = dataclasses.replace(config, batch_size=per_process_batch(config, accelerator))
    splits, data_info = on_main_first(accelerator, lambda: datasets.load_splits(
        dataset, batch_config, first_model.input_spec, device=accelerator.device, rank=accelerator.process_index,
        world=accelerator.num_processes, channels_last=channels_last,
        workers=config.num_workers if accelerator.is_main_process else 1))
    check_batch_fits(config, splits, batch_config.batch_size, accelerator.num_processes)

    settings = resolved_settings(config, accelerator, splits[config.targets[0]])
    accelerator.print(startup_line(config, settings))
    trackers = tracking.Trackers(accelerator, config, settings)
    pairs = [(target, seed) for target in config.targets  # --target cartoon,sketch: cross-domain validation
             for seed in config.seed_list]  # --seeds 0,1,2: final runs
    runs, failed = [], []

    def results(summary: dict) -> dict:
        """results.json: the models done so far; the summary (target_acc...) once all are."""
        complete = bool(summary)
        return {"method": config.method, "config": config.flat(), "complete": complete, **summary,
                **(runs[0] if len(runs) == 1 and complete else {}), "runs": runs, **data_info,
                "per_process_batch": batch_config.batch_size,
                "global_batch": batch_config.batch_size * accelerator.num_processes,
                "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
                "headline": dataset.headline, "wall_seconds": time.time() - wall_start}

    for target, seed in pairs:
        if first_model is not None:
            model, first_model = first_model, None
        else:
            set_seed(seed)
            model = build_model(config, len(classes))
        prefix = tracking.model_prefix(target, seed, config)
        flags = dataclasses.replace(config, target=target, seed=seed, seeds="")  # its tracker runs' config
        log = trackers.start_model(flags, prefix)
        one = dataclasses.replace(batch_config, target=target, seed=seed, seeds="")
        trained = train_model(one, model, accelerator, splits[target], prefix, log, channels_last, stop)
        runs.append({"target": target, "seed": seed, **trained.record})
        summary = tracking.summarize(runs) if len(runs) == len(pairs) else {}
        complete = bool(summary)
        accelerator.print(model_line(runs[-1]))
        if complete:
            accelerator.print(summary_line(summary, output_dir, config.dataset, dataset.headline))
        # The results first, then the figures and the weights: a file that does not fit (a full
        # disk) or a kill during the t-SNE loses none of them.
        error = write_results(results(summary), output_dir, accelerator)
        drawn, not_saved = save_files(trained, one, accelerator)
        if drawn:
            runs[-1]["figures"] = drawn
            error = write_results(results(summary), output_dir, accelerator)
        failed += not_saved + [error] * bool(error and complete)
        if error and not complete:
            warn(f"cannot write {output_dir}/{error}; trying again after the next model")
        trackers.end_model(flags, prefix, runs[-1], classes, output_dir / prefix / "model.safetensors")
        del trained, model  # the next model is built without this one in memory
    trackers.finish(summary, output_dir / "results.json" if accelerator.is_main_process else None, runs[-1]["steps"])
    accelerator.end_training()
    if failed:
        raise not_saved_error(list(dict.fromkeys(failed)), output_dir)
    return results(summary)

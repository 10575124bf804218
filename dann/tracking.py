"""Experiment tracking through Accelerate's trackers (W&B, TensorBoard): one tracker run per
model a command trains (a target and a seed), the runs of a command grouped; their aggregate
(mean and std over seeds, cross-domain means) in a last small run of the group; each model's
figures and numbers at its last step, TensorBoard's hparams entry, the W&B model artifact
(--log_model) and results.json.

Why a summary run: W&B's own mean and spread over a group's runs then read the models' runs
alone (the summary run has job type 'summary'), and a W&B sweep or a table reads one run per
command, with `target_acc` or `xdomain/target_acc_mean` in its summary and history. Under a W&B
sweep agent W&B joins every run of the process to the sweep's one run (WANDB_RUN_ID): with
several models their metrics go to it under their prefixes (`cartoon/seed1/eval/target_acc`).
wandb is imported inside the functions that use it.
"""
from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path

import numpy as np

from dann import selection
from dann.config import TrainConfig
from dann.errors import warn

SUMMARY_KEYS = ("target_acc", "best_target_acc", "source_acc", "target_mean_class_acc")


# ---------------------------------------------------------------------------- the summary

def summarize(runs: list[dict]) -> dict:
    """Summary keys over the models of one run (each with target, seed and SUMMARY_KEYS).

    target_acc etc.: mean over all models; *_std: standard deviation over seeds of the
    per-seed mean over targets (sample std; 0 for one seed); <target>/<key>: mean over
    seeds; xdomain/<key>_mean: mean over targets, the metric cross-domain sweeps maximize;
    select/<rule>: the selection scores' mean over all models. A key some model lacks is left out.
    """
    targets = list(dict.fromkeys(r["target"] for r in runs))
    seeds = list(dict.fromkeys(r["seed"] for r in runs))
    summary = {"num_seeds": len(seeds), "seeds": seeds, "targets": targets}
    for key in SUMMARY_KEYS:
        if any(r.get(key) is None for r in runs):
            continue
        summary[key] = statistics.fmean(r[key] for r in runs)
        per_seed = [statistics.fmean(r[key] for r in runs if r["seed"] == s) for s in seeds]
        summary[f"{key}_std"] = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
        if len(targets) > 1:
            for t in targets:
                summary[f"{t}/{key}"] = statistics.fmean(r[key] for r in runs if r["target"] == t)
            summary[f"xdomain/{key}_mean"] = statistics.fmean(summary[f"{t}/{key}"] for t in targets)
    return {**summary, **selection.summarize(runs)}


def model_prefix(target: str, seed: int, config: TrainConfig) -> str:
    """Where one model's files go (and its metrics, in a shared run): '' for a single model,
    else e.g. 'cartoon', 'seed1' or 'cartoon/seed1'."""
    parts = [target] if len(config.targets) > 1 else []
    parts += [f"seed{seed}"] if len(config.seed_list) > 1 else []
    return "/".join(parts)


def numbers_of(values: dict) -> dict:
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# ---------------------------------------------------------------------------- starting trackers

def under_sweep_agent() -> bool:
    """Started by `wandb agent`: W&B then joins every run of this process to the sweep's run."""
    return bool(os.environ.get("WANDB_SWEEP_ID"))


def wandb_init_kwargs(config: TrainConfig, output_dir: str, **run) -> dict:
    """wandb.init keyword arguments from the flags (empty ones left to W&B's defaults) and `run`
    (name, group, job_type); W&B's folder in output_dir unless WANDB_DIR names one."""
    kwargs = {"entity": config.wandb_entity or None, "tags": [t for t in config.wandb_tags.split(",") if t] or None,
              "dir": None if os.environ.get("WANDB_DIR") else output_dir or None, **run}
    return {k: v for k, v in kwargs.items() if v is not None}


def _redact(text: str) -> str:
    key = os.environ.get("WANDB_API_KEY")
    return text.replace(key, "***") if key else text


def start_wandb(project: str, init_kwargs: dict, offline: bool = False):
    """(Accelerate's WandBTracker started, or None; whether it logs offline). If W&B is unreachable
    or not logged in: one warning and an offline run instead (uploaded later with `wandb sync`);
    offline=True (an earlier run of this command fell back): offline at once, without a word."""
    from accelerate.tracking import WandBTracker

    reason = ""
    if not offline:
        tracker = WandBTracker(project, **init_kwargs)
        try:
            tracker.start()
            return tracker, False
        except Exception as e:  # noqa: BLE001 -- any failure to reach W&B must not stop training
            reason = _redact(f"{type(e).__name__}: {e}".splitlines()[0])
    try:
        import wandb
        if wandb.run is not None:
            wandb.finish(quiet=True)
        tracker = WandBTracker(project, **{**init_kwargs, "mode": "offline"})
        tracker.start()
        if reason:
            folder = Path(tracker.run.dir).parent.parent  # <dir>/wandb, above offline-run-*/files
            warn(f"W&B unavailable ({reason}); logging offline to {folder} -- upload later with "
                 f"`wandb sync {folder}/offline-run-*`")
        return tracker, True
    except Exception as e:  # noqa: BLE001
        warn(f"W&B unavailable ({reason or 'offline'}) and offline logging failed "
             f"({_redact(str(e).splitlines()[0] if str(e) else type(e).__name__)}); training goes on without W&B")
        return None, True


def start_tensorboard(folder: Path):
    """Accelerate's TensorBoardTracker writing in `folder` itself: `tensorboard --logdir runs` then
    names each run after its folder (runs/<run>, runs/<run>/<target>/seed<N>)."""
    from accelerate.tracking import TensorBoardTracker

    tracker = TensorBoardTracker("", folder)
    tracker.start()
    return tracker


def write_hparams(writer, hparams: dict, metrics: dict) -> None:
    """TensorBoard's hparams entry for the run of `writer`: its settings, and the metrics its
    HParams table shows (the dashboard reads their values from the run's scalars of those names,
    logged at the last step). Written into the run's own event file, not a subfolder."""
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    values = {k: v for k, v in hparams.items() if isinstance(v, (bool, int, float, str))}
    for summary in hparams_summaries(values, metrics):  # experiment, session start, session end
        writer._get_file_writer().add_summary(summary)  # what SummaryWriter.add_hparams does, in this run
    writer.flush()


def png_pixels(path) -> np.ndarray:
    """A PNG as a (1, H, W, 3) uint8 batch, the form TensorBoard's add_images takes (NHWC)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))[None]


def confusion_chart(confusion, classes: list[str], title: str):
    """W&B's confusion-matrix chart from a (true, predicted) count matrix."""
    import wandb

    counts = np.asarray(confusion).ravel()
    n = len(classes)
    y_true = np.repeat(np.repeat(np.arange(n), n), counts)
    preds = np.repeat(np.tile(np.arange(n), n), counts)
    return wandb.plot.confusion_matrix(y_true=y_true.tolist(), preds=preds.tolist(), class_names=list(classes),
                                       title=title)


# ---------------------------------------------------------------------------- a command's runs

class Trackers:
    """The tracker runs of one command (--report_to). Only the main process tracks; on the others
    every method does nothing. `start_model` / `end_model` around each model, `finish` at the end."""

    def __init__(self, accelerator, config: TrainConfig, settings: dict):
        self.accelerator, self.config, self.settings = accelerator, config, settings
        names = {str(t) for t in accelerator.log_with} if accelerator.is_main_process else set()
        self.use_wandb, self.use_tensorboard = "wandb" in names, "tensorboard" in names
        self.several = len(config.targets) * len(config.seed_list) > 1
        self.name = config.run_name or Path(config.output_dir).name
        self.group = config.wandb_group or self.name
        self.one_wandb_run = self.use_wandb and self.several and under_sweep_agent()
        self.offline = False  # after a fallback, this command's later W&B runs start offline
        self.shared = None  # the one W&B run of several models under a sweep agent
        self.step_offset = 0  # where the next model's steps start in the shared run
        self.open: list = []  # the current model's trackers (with one model: the command's)
        self.models: list[dict] = []  # each model's numbers, for the summary run's table

    def _wandb(self, config: TrainConfig, **run):
        if self.offline is None:  # W&B failed even offline: left out
            return None
        tracker, offline = start_wandb(config.wandb_project, wandb_init_kwargs(config, self.config.output_dir, **run),
                                       self.offline)
        self.offline = None if tracker is None else offline
        if tracker is not None:
            tracker.store_init_configuration({**config.flat(), **self.settings})
        return tracker

    def start_model(self, config: TrainConfig, prefix: str):
        """Start one model's runs (its target and seed in `config`); returns its log(values, step)."""
        self.open = []
        if self.use_tensorboard:
            self.open.append(start_tensorboard(Path(self.config.output_dir) / prefix))
        if self.one_wandb_run and self.shared is None:
            self.shared = self._wandb(self.config, name=self.name, group=self.group, job_type=self.config.method)
        elif self.use_wandb and not self.one_wandb_run:
            name = f"{self.name}/{prefix}" if prefix else self.name
            tracker = self._wandb(config, name=name, group=self.group, job_type=config.method)
            self.open += [tracker] if tracker is not None else []
        self.accelerator.trackers = [*self.open, *([self.shared] if self.shared is not None else [])]
        if self.shared is not None:  # each model's own x-axis in the shared run
            self.shared.tracker.define_metric(f"{prefix}/step")
            self.shared.tracker.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")
        shared, offset = self.shared, self.step_offset

        def log(values: dict, step: int) -> None:
            # the sweep metric in W&B's history too, at each evaluation (hyperband reads the history)
            sweep_metric = {"target_acc": values["eval/target_acc"]} if "eval/target_acc" in values else {}
            for tracker in self.open:
                tracker.log({**values, **sweep_metric} if tracker.name == "wandb" else values, step=step)
            if shared is not None:
                shared.log({**{f"{prefix}/{k}": v for k, v in values.items()}, f"{prefix}/step": step},
                           step=step + offset)
        return log

    def end_model(self, config: TrainConfig, prefix: str, results: dict, classes: list[str], model_file: Path) -> None:
        """One model's figures and numbers at its last step, TensorBoard's hparams entry, its W&B
        model artifact (--log_model); its runs closed (one model's stay open for `finish`)."""
        step = results["steps"]
        numbers = {k: results[k] for k in SUMMARY_KEYS if results.get(k) is not None}
        self.models.append({"target": config.target, "seed": config.seed, **numbers})
        figures = results.get("figures", {})
        where = f" ({config.source}->{config.target})"
        for tracker in self.open:
            self._figures(tracker, figures, results["confusion_matrix"], classes, where, step)
            if not self.several:  # its numbers come with the command's summary, in `finish`
                continue
            tracker.log(numbers, step=step)
            if tracker.name == "wandb":
                tracker.tracker.summary.update(numbers)
            else:
                write_hparams(tracker.writer, {**config.flat(), **self.settings}, numbers)
        if self.shared is not None:
            self._figures(self.shared, figures, results["confusion_matrix"], classes, where,
                          self.step_offset + step, key=f"{prefix}/")
            self.shared.log({f"{prefix}/{k}": v for k, v in numbers.items()}, step=self.step_offset + step)
        if config.log_model:
            self._log_model(config, prefix, numbers, model_file)
        self.step_offset += step
        if self.several:
            self._close(self.open)
            self.open = []

    def _figures(self, tracker, figures: dict, confusion, classes, where: str, step: int, key: str = "") -> None:
        if tracker.name == "wandb":
            import wandb

            values = {f"{key}figures/{name}": wandb.Image(str(path)) for name, path in figures.items()}
            values[f"{key}charts/confusion_matrix"] = confusion_chart(confusion, classes,
                                                                      "target confusion matrix" + where)
            tracker.log(values, step=step)
        elif figures:
            tracker.log_images({f"figures/{name}": png_pixels(path) for name, path in figures.items()}, step=step,
                               dataformats="NHWC")

    def _log_model(self, config: TrainConfig, prefix: str, numbers: dict, model_file: Path) -> None:
        """The final weights as a W&B artifact of type 'model' (aliases final, latest). Added by
        reference to the file ('immutable'): no copy in W&B's staging folder; an offline run
        uploads it at `wandb sync`, so keep the file until then."""
        tracker = self.shared or next((t for t in self.open if t.name == "wandb"), None)
        if tracker is None or not model_file.is_file():
            return
        import wandb

        run = tracker.tracker
        suffix = f"-{prefix.replace('/', '-')}" if self.shared is not None and prefix else ""
        artifact = wandb.Artifact(f"model-{run.id}{suffix}", type="model", metadata={
            "method": config.method, "backbone": config.backbone, "dataset": config.dataset, "source": config.source,
            "target": config.target, "seed": config.seed, **numbers})
        try:
            artifact.add_file(str(model_file), name=model_file.name, policy="immutable")
        except TypeError:  # a wandb without `policy`: it copies the file
            artifact.add_file(str(model_file), name=model_file.name)
        run.log_artifact(artifact, aliases=["final"])

    def finish(self, summary: dict, results_file: Path | None, last_step: int) -> None:
        """The command's aggregate at the last step: in the group's summary run (several models;
        under a sweep agent, the shared run) or in the one model's runs; the TensorBoard hparams
        entry; results.json attached to the W&B run; every run closed."""
        numbers = numbers_of(summary)
        runs = list(self.open) if not self.several else []
        if self.several and self.use_tensorboard:
            runs.append(start_tensorboard(Path(self.config.output_dir)))
        if self.several and self.use_wandb:
            summary_run = self.shared or self._wandb(self.config, name=self.name, group=self.group, job_type="summary")
            runs += [summary_run] if summary_run is not None else []
        for tracker in runs:
            step = self.step_offset if tracker is self.shared else last_step
            tracker.log(numbers, step=step)
            if tracker.name == "wandb":
                self._wandb_summary(tracker, numbers, results_file, step)
            else:
                write_hparams(tracker.writer, {**self.config.flat(), **self.settings}, numbers)
        self._close(runs)
        self.open, self.accelerator.trackers = [], []

    def _wandb_summary(self, tracker, numbers: dict, results_file: Path | None, step: int) -> None:
        """The numbers as the run's summary too; with several models, a table of them; results.json
        among the run's files."""
        import wandb

        tracker.tracker.summary.update({**numbers, "seeds": self.config.seed_list, "targets": self.config.targets})
        if self.several:
            keys = [k for k in SUMMARY_KEYS if all(k in m for m in self.models)]
            table = wandb.Table(columns=["target", "seed", *keys],
                                data=[[m["target"], m["seed"], *(m[k] for k in keys)] for m in self.models])
            tracker.log({"models": table}, step=step)
        if results_file is not None and results_file.is_file():  # files in run.dir are uploaded with the run
            shutil.copy(results_file, Path(tracker.tracker.dir) / results_file.name)

    def _close(self, trackers: list) -> None:
        for tracker in trackers:
            tracker.finish()

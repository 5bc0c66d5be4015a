"""One run assembly: ``build_run(cfg)`` turns a train config into a :class:`TrainingRun`
(data, model, what trains, optimizer, scheduler, stopper, loop settings, checkpoints);
``run_training`` fits it and writes the run's results. ``facecls train`` and the
benchmarks (scripts/bench*.py) both go through here, so the benchmark measures what users run.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from facecls.config.instantiate import instantiate
from facecls.data.batches import BatchPreparer, build_transform
from facecls.data.dataset import DataBundle, build_data
from facecls.data.features import FeatureCache
from facecls.errors import RunStopped
from facecls.inference.device import amp_flag, device_name, precision_name, select_device
from facecls.io import check_writable_dir, tensor_bytes
from facecls.models import build_model, preprocess_for
from facecls.models.base import FaceModel
from facecls.models.memory import check_training_memory
from facecls.timing import CLOCK
from facecls.training.checkpoint import CheckpointWriter
from facecls.training.distributed import DistContext
from facecls.training.engine import fit, optimizer_steps_per_epoch
from facecls.training.imbalance import check_sampler, class_weights
from facecls.training.interrupt import GracefulStop
from facecls.training.loggers import EpochLog, Loggers, build_loggers, finish_loggers, run_info
from facecls.training.loop_types import EarlyStopping, FitResult, LoopSettings, ResumePoint, StopReason
from facecls.training.open_set import OpenSetTest, build_open_set
from facecls.training.outputs import RunRecorder, finish_run
from facecls.training.pruning import with_pruning
from facecls.training.regularisers import WeightAverage, build_mixer
from facecls.training.resume import load_resume_checkpoint, restore_training_state
from facecls.training.runtime import compile_model, configure_threads, progress_flag, seed_everything
from facecls.training.schedules import EpochSchedule, build_schedule

log = logging.getLogger(__name__)


def loop_settings(cfg: DictConfig, device: torch.device) -> LoopSettings:
    t = cfg.trainer
    return LoopSettings(device=device, max_epochs=t.max_epochs, batch_size=t.batch_size,
                        eval_batch_size=t.eval_batch_size, amp=amp_flag(t.amp, device),
                        grad_clip=t.grad_clip,
                        label_smoothing=OmegaConf.select(cfg, "loss.label_smoothing", default=t.label_smoothing),
                        progress=progress_flag(t.progress), seed=cfg.seed,
                        limit_batches=t.get("limit_batches"), accumulate=t.get("accumulate", 1))


@dataclass(kw_only=True)
class TrainingRun:
    """Everything one training run needs, assembled from its config."""

    model: FaceModel           # the whole model: checkpoints save it, the test split scores it
    trained: torch.nn.Module   # what the optimizer's steps run through (see build_run)
    data: DataBundle           # what `trained` sees: images, or a frozen backbone's features
    prepare: BatchPreparer
    optimizer: torch.optim.Optimizer
    scheduler: EpochSchedule | None
    stopper: EarlyStopping
    settings: LoopSettings
    checkpoints: CheckpointWriter
    dist: DistContext
    ema: WeightAverage | None = None  # trainer.ema: what validation and best.pt use
    open_set: OpenSetTest | None = None  # issue 23: a margin-loss or identity-split run's test verification
    resume: ResumePoint | None = None
    data_seconds: float = 0.0      # scan + decode (or the decode cache)
    features_seconds: float = 0.0  # a frozen backbone's features (or their cache)

    def fit(self, run_dir: Path, stop: GracefulStop | None = None, loggers: Loggers | None = None,
            wait: bool = True) -> FitResult:
        """Train (DDP-wrapped when several processes train), reporting each epoch to run_dir
        (and to the trackers in ``loggers``); returns when the last checkpoint is on disk (on every
        way out). ``wait=False``: a normal return leaves the last write in flight, so the caller can
        score the test split and draw the figures meanwhile; it calls ``checkpoints.wait()`` after."""
        reporter = RunRecorder(run_dir, self.checkpoints)
        if loggers:
            reporter = EpochLog(reporter, loggers, len(self.data.train))
        first_step = self.optimizer.register_step_post_hook(_first_step_lap())
        try:
            result = fit(self.dist.wrap(self.trained, self.settings.seed), self.data, self.prepare, self.optimizer,
                         self.scheduler, self.stopper, self.settings, reporter,
                         stop=stop, resume=self.resume, ema=self.ema)
        except BaseException:
            self.checkpoints.flush()
            self.checkpoints.wait()
            raise
        finally:
            first_step.remove()
            CLOCK.lap("epochs")
        self.checkpoints.flush()  # last.pt of the last finished epoch, if every_n_epochs skipped it
        if wait:
            self.checkpoints.wait()
        return result


def _first_step_lap():
    """An optimizer step hook that laps the clock once: start-up ends with the first finished step."""
    done = []

    def hook(*_):
        if not done:
            done.append(CLOCK.lap("first_step"))
    return hook


def build_run(cfg: DictConfig, run_dir: Path, dist: DistContext | None = None) -> TrainingRun:
    """Assemble the run ``cfg`` describes, writing into ``run_dir``.

    Args:
        cfg: a composed `train` config (conf/train.yaml).
        run_dir: the run dir; checkpoints go to run_dir/checkpoints, resume reads last.pt there.
        dist: this process's place in a DDP group (facecls.training.distributed); None for one process.
    """
    dist = dist or DistContext(device=select_device(cfg.trainer.device))
    device = dist.device
    configure_threads(cfg.trainer.num_threads)
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    settings = dist.adapt(loop_settings(cfg, device))

    started = time.perf_counter()
    prep = preprocess_for(cfg.model)
    # a config that cannot fit is refused with its estimate, before any pixel or weight is allocated
    check_training_memory(cfg.model, 2, settings.batch_size, prep.size, device)
    with dist.main_first():  # DDP: rank 0 fills the disk caches, the others read them
        data = build_data(cfg.data, prep, cfg.paths.cache_dir, settings.progress)
    data_seconds = time.perf_counter() - started
    CLOCK.lap("data")
    model = build_model(cfg.model, num_classes=len(data.classes)).to(device)
    channels_last = bool(cfg.trainer.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    augment = build_transform(cfg.aug.get("transforms"))
    prepare = BatchPreparer(prep, device, augment, channels_last)
    if cfg.trainer.get("overfit_batches"):
        # Sanity check (debug=overfit): a few fixed batches, also used as the validation set.
        data = data.with_train_subset(cfg.trainer.overfit_batches * cfg.trainer.batch_size)

    started = time.perf_counter()
    view = model.training_view(data, prepare, FeatureCache(cfg.paths.cache_dir, settings.eval),
                               augmented=augment is not None)
    features_seconds = time.perf_counter() - started if view.data is not data else 0.0
    # What trains = the model's training view (the model itself, or its head on cached
    # features), compiled when asked; fit wraps it in DDP. All share the model's parameters.
    trained = compile_model(view.module, cfg.trainer.get("compile", False))
    # issue 23: an embedding model trains with its loss head (margin or linear) as one module
    open_set = build_open_set(cfg, model, len(data.classes), device)
    trained = open_set.trained(trained)
    decay = OmegaConf.select(cfg, "trainer.ema.decay", default=None)
    ema = WeightAverage(trained, decay) if decay is not None else None
    settings = dataclasses.replace(
        settings, mixer=build_mixer(cfg.aug.get("mixup_alpha"), cfg.aug.get("cutmix_alpha"), len(data.classes)),
        class_weights=class_weights(OmegaConf.select(cfg, "loss.class_weights", default=cfg.trainer.get(
            "class_weights")), data.train.labels, data.classes),
        balanced_sampling=check_sampler(cfg.data.get("sampler")), epoch_start=model.start_epoch)
    settings = open_set.settings(settings, view.data, view.prepare)

    # _convert_: param groups reach the optimizer as plain dicts (not DictConfig)
    optimizer = instantiate(cfg.optim, params=open_set.param_groups(model.param_groups(cfg.optim.lr)),
                            _convert_="partial")
    scheduler = build_schedule(cfg.get("sched"), optimizer, optimizer_steps_per_epoch(len(view.data.train), settings))
    es = cfg.trainer.early_stopping
    stopper = EarlyStopping(monitor=open_set.monitor(cfg.trainer.monitor), patience=es.patience,
                            min_delta=es.min_delta)
    stopper = with_pruning(cfg, stopper)  # a trial of an Optuna search (hparams_search): pruned by its study
    checkpoints = CheckpointWriter(run_dir / "checkpoints", model=model, optimizer=optimizer, scheduler=scheduler,
                                   stopper=stopper, config=OmegaConf.to_container(cfg, resolve=True),
                                   classes=data.classes, preprocess=prep,
                                   enabled=bool(cfg.trainer.get("checkpoints", True)), ema=ema,
                                   loss_head=open_set.loss_head,
                                   **OmegaConf.to_container(cfg.trainer.get("checkpoint") or {}))
    resume = None
    if cfg.get("resume") and (last := load_resume_checkpoint(run_dir)) is not None:
        resume = restore_training_state(last, model, optimizer, scheduler, stopper, ema, open_set.loss_head)
    CLOCK.lap("model")  # build, training view (a frozen backbone's features), optimizer, resume state
    return TrainingRun(model=model, trained=trained, data=view.data, prepare=view.prepare, optimizer=optimizer,
                       scheduler=scheduler, stopper=stopper, settings=settings, checkpoints=checkpoints, dist=dist,
                       ema=ema, resume=resume, data_seconds=data_seconds, features_seconds=features_seconds,
                       open_set=open_set.test(checkpoints))


def run_training(cfg: DictConfig, run_dir: Path, dist: DistContext | None = None) -> dict:
    """Train one configuration into ``run_dir``; return its metrics (empty on DDP ranks > 0)."""
    started = time.perf_counter()
    # Trackers (logger=…) belong to rank 0; built first so a missing package stops before the data loads.
    loggers = build_loggers(cfg.get("logger")) if dist is None or dist.is_main else Loggers([])
    run = build_run(cfg, run_dir, dist)
    model = run.model
    if run.checkpoints.enabled and run.dist.is_main:
        # best.pt + last.pt (weights and optimizer moments) + the temp copy of a replace: checked before epoch 1
        check_writable_dir(run_dir, need_bytes=4 * tensor_bytes(model.state_dict()), what="run's checkpoints",
                           fix="set paths.output_dir to a disk with room (or trainer.checkpoints=false)")
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # the precision trainer.amp=auto chose differs between machines: said here, kept in metrics.json and trackers
    runtime = {"precision": precision_name(run.settings.device, run.settings.amp),
               "device_name": device_name(run.settings.device)}
    log.info("Model %s: %s parameters (%s trainable) on %s (%s) in %s", type(model).__name__,
             f"{n_params:,}", f"{n_trainable:,}", run.settings.device, runtime["device_name"], runtime["precision"])
    if loggers:
        info = run_info(cfg, run_dir, resumed=run.resume is not None)
        info.config["runtime"] = dict(runtime)  # MLflow params and W&B config: runtime.precision, runtime.device_name
        loggers.start(info)
    try:
        try:
            with GracefulStop() as stop:
                # the last checkpoint write goes on while the test split is scored and the figures drawn
                result = run.fit(run_dir, stop, loggers, wait=False)
            if not run.dist.is_main:
                return {}  # DDP: rank 0 scores the test split and writes the results
            in_epochs = run.checkpoints.wait_seconds
            metrics = finish_run(run_dir, model, run.trained, run.data, run.prepare, run.settings.eval, result,
                                 run.checkpoints.best_weights(run.settings.device, wait=False),
                                 extra={"num_params": n_params, "trainable_params": n_trainable,
                                        "device": str(run.settings.device), **runtime,
                                        "wall_seconds": time.perf_counter() - started,
                                        "class_weights": run.settings.class_weights,
                                        "sampler": "balanced" if run.settings.balanced_sampling else None,
                                        **loggers.summary()},
                                 before_metrics=run.checkpoints.close,
                                 timing={"checkpoint_wait_in_epochs": round(in_epochs, 4)}, open_set=run.open_set)
        finally:
            run.checkpoints.close()  # every checkpoint on disk, the writer thread gone (on every way out)
    except BaseException:
        loggers.finish("FAILED")  # a crash (or a second Ctrl-C) still closes the tracker's run
        raise
    if loggers:
        finish_loggers(loggers, metrics, run_dir, str(result.stop_reason))
    stopped_early(result, metrics, run_dir, cfg.optim.lr)
    return metrics


def stopped_early(result: FitResult, metrics: dict, run_dir: Path, lr: float) -> None:
    """Raise RunStopped (one line, non-zero exit) for a run that did not end normally."""
    value = metrics.get("best_val_verif_acc") or metrics["best_val_acc"] or 0.0  # what a sweeper gets for this run
    if result.stop_reason is StopReason.INTERRUPTED:
        raise RunStopped(f"interrupted after {len(result.history)} finished epoch(s); run files are in "
                         f"{run_dir} — continue with: facecls train resume={run_dir}", exit_code=130, value=value)
    if result.stop_reason is StopReason.DIVERGED:
        raise RunStopped(f"training diverged (non-finite loss) in epoch {len(result.history) + 1}; best "
                         f"checkpoint kept in {run_dir} — try a lower optim.lr (now {lr:g}) or "
                         "trainer.grad_clip=1.0.", exit_code=3, value=value)

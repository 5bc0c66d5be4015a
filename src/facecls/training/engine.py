"""THE train/eval loop. Every model trains here.

Model-specific needs are data this loop reads, never branches on a model name: the optimizer
carries the param groups (frozen backbone = parameters left out, backbone LR = a group with
its own lr), a frozen backbone's cached features are simply the inputs of the data splits,
and the model's own ``train()`` keeps frozen parts in eval mode.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from facecls.config.checks import MONITORS
from facecls.data.batches import iterate_batches
from facecls.errors import UserError
from facecls.inference.device import autocast
from facecls.inference.evaluate import EvalSettings, evaluate
from facecls.training.distributed import SINGLE, DistContext
from facecls.training.runtime import capture_rng, keep_freed_memory, restore_rng

log = logging.getLogger(__name__)


class StopReason(str, Enum):
    """Why ``fit`` returned; its value is what metrics.json, checkpoints and trackers record."""

    MAX_EPOCHS = "max_epochs"
    EARLY_STOPPING = "early_stopping"
    DIVERGED = "diverged"        # the training loss stopped being a finite number
    INTERRUPTED = "interrupted"  # a signal (Ctrl-C, SIGTERM): the unfinished epoch is dropped

    def __str__(self) -> str:
        return self.value

FINITE_CHECK_STEPS = 25  # on a GPU: steps between two looks for a non-finite loss


class EarlyStopping:
    """Track the monitored validation score; stop after ``patience`` epochs without an
    improvement larger than ``min_delta``. ``patience=None`` never stops (it only tracks
    the best epoch, which picks best.pt)."""

    def __init__(self, monitor: str = "val_acc", patience: int | None = None, min_delta: float = 0.0):
        if monitor not in MONITORS:
            raise UserError(f"unknown monitor '{monitor}' — use {' or '.join(MONITORS)}.")
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        self.sign = -1.0 if monitor == "val_loss" else 1.0  # lower val_loss / higher accuracies are better
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def step(self, epoch: int, score: float) -> bool:
        """Record one epoch's score; return True when it is a new best."""
        if self.best is None or self.sign * (score - self.best) > self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


@dataclass
class LoopSettings:
    """How ``fit`` trains: epochs, batch sizes, numerics, and this process's DDP rank."""

    device: torch.device
    max_epochs: int
    batch_size: int
    eval_batch_size: int = 256
    amp: bool = False
    grad_clip: float | None = None
    label_smoothing: float = 0.0
    progress: bool | None = None  # None: bars only on a terminal
    seed: int = 0
    limit_batches: int | float | None = None  # per training epoch: a count, or a fraction of the batches
    dist: DistContext = SINGLE  # DDP: this process's rank; batch_size is then the per-process batch
    mixer: Callable | None = None  # MixUp/CutMix: (images, labels) → (mixed images, label probabilities)
    class_weights: list[float] | None = None  # cross-entropy weight per class (trainer.class_weights)
    balanced_sampling: bool = False  # data.sampler=balanced: each class equally likely per draw
    loss_head: bool = False  # the net is a training.losses.WithLossHead: its forward takes the labels (margin)
    verification: Callable | None = None  # open-set runs: net → val_verif_acc (training.open_set.Verification)
    closed_set_val: bool = True  # False with data.split.by=identity: val people are no training class (NaN)
    accumulate: int = 1  # trainer.accumulate: micro-batches per optimizer step (effective batch = batch_size × this)
    epoch_start: Callable[[int], None] | None = None  # the model's start_epoch (staged fine-tuning), before each pass

    def __post_init__(self):
        if isinstance(self.accumulate, bool) or not isinstance(self.accumulate, int) or self.accumulate < 1:
            raise UserError(f"trainer.accumulate={self.accumulate} is invalid — use a whole number >= 1 "
                            "(micro-batches per optimizer step).")

    @property
    def eval(self) -> EvalSettings:
        """The settings of the validation (and test) passes."""
        return EvalSettings(self.device, self.eval_batch_size, self.amp, self.progress, self.dist)

    def autocast(self):
        return autocast(self.device, self.amp)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    stop_reason: StopReason = StopReason.MAX_EPOCHS
    best_epoch: int = 0
    train_seconds: float = 0.0
    rng: dict = field(default_factory=dict)  # random states at the end of the last finished epoch


@dataclass(frozen=True)
class ResumePoint:
    """Where an interrupted run continues: its finished epochs and every random state at
    the end of the last one (the weights, optimizer and counters are restored before fit)."""

    epoch: int
    history: list[dict]
    rng: dict


class EpochReporter(Protocol):
    """Receives each finished epoch (rank 0 only): writes history.csv, checkpoints, trackers."""

    def train_pass_finished(self) -> None:
        """The epoch's weights are final (validation comes next and changes none): a
        checkpoint snapshot can be taken now, beside the validation pass."""

    def epoch_finished(self, result: FitResult, improved: bool) -> None: ...


@dataclass
class EpochTotals:
    """One training pass's sums, kept on the device and read once per epoch (no host-device
    sync per step)."""

    seen: int
    loss_sum: torch.Tensor
    correct: torch.Tensor


def batches_per_epoch(n_train: int, settings: LoopSettings) -> int:
    """Training batches one epoch takes on this process (its DDP share; ``limit_batches`` applied)."""
    n_batches = math.ceil(math.ceil(n_train / settings.dist.world_size) / settings.batch_size)
    limit = settings.limit_batches
    if limit is not None:
        n_batches = min(n_batches, max(1, int(limit) if limit >= 1 else math.ceil(n_batches * limit)))
    return n_batches


def optimizer_steps_per_epoch(n_train: int, settings: LoopSettings) -> int:
    """Optimizer steps of one epoch: one per ``accumulate`` micro-batches, and one at the epoch's end
    for a last, shorter window (what a ``sched.interval=step`` schedule counts)."""
    return math.ceil(batches_per_epoch(n_train, settings) / settings.accumulate)


class _Pass:
    """What every training pass of one ``fit`` shares: the loss, the gradient scaler, the batch
    order and how many batches an epoch takes."""

    def __init__(self, data, settings: LoopSettings):
        weight = torch.tensor(settings.class_weights, device=settings.device) if settings.class_weights else None
        self.criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=settings.label_smoothing)
        self.scaler = torch.amp.GradScaler(enabled=settings.amp and settings.device.type == "cuda"
                                           and not torch.cuda.is_bf16_supported())
        self.order = torch.Generator().manual_seed(settings.seed)  # the batch order, reproducible from the seed
        self.n_batches = batches_per_epoch(len(data.train), settings)
        # A non-finite loss is looked for before each step on the CPU (free there); on a GPU that
        # look is a host-device sync, so it checks the epoch's running loss sum every few steps.
        self.check_every = 1 if settings.device.type == "cpu" else FINITE_CHECK_STEPS


def train_one_epoch(net: nn.Module, data, prepare: Callable, optimizer: torch.optim.Optimizer,
                    settings: LoopSettings, shared: _Pass, epoch: int, *, stop=None, ema=None,
                    quiet: bool | None = None, scheduler=None) -> tuple[EpochTotals, StopReason | None]:
    """One pass over shuffled training batches: forward → loss → backward → step (→ EMA update,
    → a per-step schedule's step). With ``settings.accumulate`` = N the optimizer steps once per N
    micro-batches on their mean loss's gradient. Returns the pass's sums and, when it had to stop
    inside the pass, why (diverged, interrupted)."""
    dist, device = settings.dist, settings.device
    accumulate, pending = settings.accumulate, False
    per_step = scheduler if scheduler is not None and scheduler.per_step else None
    totals = EpochTotals(0, torch.zeros((), dtype=torch.float64, device=device),
                         torch.zeros((), dtype=torch.int64, device=device))
    batches = tqdm(iterate_batches(data.train, settings.batch_size, shuffle=True, generator=shared.order,
                                   rank=dist.rank, world_size=dist.world_size,
                                   balanced=settings.balanced_sampling),
                   total=shared.n_batches, desc=f"epoch {epoch}", leave=False, unit="batch", disable=quiet)
    for step, (x, y) in enumerate(batches):
        if step == shared.n_batches:
            break
        x, y = prepare(x, train=True), y.to(device, non_blocking=True)
        target = y
        if settings.mixer is not None:  # MixUp/CutMix: mixed images, label probabilities
            x, target = settings.mixer(x, y)
            y = target.argmax(1)  # training accuracy counts the dominant label of each mix
        with settings.autocast():
            logits = net(x, y) if settings.loss_head else net(x)
            loss = shared.criterion(logits.float(), target)
        if shared.check_every == 1 and dist.any(not torch.isfinite(loss)):  # DDP: all ranks stop together
            return totals, StopReason.DIVERGED
        if accumulate == 1:
            optimizer.zero_grad(set_to_none=True)
            shared.scaler.scale(loss).backward()
            _optimizer_step(net, optimizer, settings, shared, ema, per_step)
        else:  # gradient accumulation: the window's mean loss, one step per window (and at the epoch's end)
            start = step - step % accumulate
            window = min(accumulate, shared.n_batches - start)  # micro-batches in this window
            pending = step + 1 < start + window
            if step == start:
                optimizer.zero_grad(set_to_none=True)
            # DDP all-reduces the gradients only on the window's last backward
            with net.no_sync() if pending and isinstance(net, DistributedDataParallel) else contextlib.nullcontext():
                shared.scaler.scale(loss / window).backward()
            if not pending:
                _optimizer_step(net, optimizer, settings, shared, ema, per_step)
        totals.seen += len(y)
        totals.loss_sum += loss.detach().double() * len(y)
        totals.correct += (logits.argmax(1) == y).sum()
        if shared.check_every > 1 and (step + 1) % shared.check_every == 0 and \
                dist.any(not torch.isfinite(totals.loss_sum)):
            return totals, StopReason.DIVERGED
        if stop is not None and dist.any(stop.requested):
            return totals, StopReason.INTERRUPTED
    if pending:  # the batches ran out before the window's end (fewer than counted): step what is there
        _optimizer_step(net, optimizer, settings, shared, ema, per_step)
    if shared.check_every > 1 and dist.any(not torch.isfinite(totals.loss_sum)):
        return totals, StopReason.DIVERGED
    return totals, None


def _optimizer_step(net: nn.Module, optimizer: torch.optim.Optimizer, settings: LoopSettings, shared: _Pass,
                    ema, schedule) -> None:
    """One optimizer step on the gradient in ``net`` (clipped as a whole), then the weight average
    and a per-step schedule (``sched.interval=step``: torch's scheduler.step() after optimizer.step())."""
    if settings.grad_clip:
        shared.scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(net.parameters(), settings.grad_clip)
    shared.scaler.step(optimizer)
    shared.scaler.update()
    if ema is not None:
        ema.update()
    if schedule is not None:
        schedule.step_batch()


def close_epoch(net: nn.Module, data, prepare: Callable, optimizer: torch.optim.Optimizer, scheduler,
                stopper: EarlyStopping, settings: LoopSettings, totals: EpochTotals, epoch: int,
                started: float) -> tuple[dict, bool]:
    """After a finished training pass: validation score, scheduler step, the history row and the
    stopper's verdict. Returns the row and whether it is a new best."""
    seen, loss_sum, correct = settings.dist.sum(totals.seen, totals.loss_sum.item(), totals.correct.item())
    val = evaluate(net, data.val, prepare, settings.eval) if settings.closed_set_val else \
        {"loss": math.nan, "acc": math.nan}
    # interval=step: the LR of the epoch's last step (the optimizer holds the next step's by now)
    lr = optimizer.param_groups[0]["lr"] if scheduler is None else scheduler.epoch_lr
    row = {"epoch": epoch, "lr": float(lr), "train_loss": loss_sum / seen, "train_acc": correct / seen,
           "val_loss": val["loss"], "val_acc": val["acc"]}
    if settings.verification is not None:  # open-set runs only: classifier rows keep their columns
        row["val_verif_acc"] = settings.verification(net)
    row["seconds"] = time.perf_counter() - started
    if scheduler is not None:  # an EpochSchedule (facecls.training.schedules)
        scheduler.step(stopper.sign * row[stopper.monitor])
    return row, stopper.step(epoch, row[stopper.monitor])


def log_epoch(row: dict, stopper: EarlyStopping, improved: bool, max_epochs: int) -> None:
    note = "new best" if improved else "not a better score" + (
        f" ({stopper.bad_epochs}/{stopper.patience})" if stopper.patience is not None else "")
    # An identity split's val people are not training classes: val_loss/val_acc are nan there and
    # val_verif_acc is the score, so a field that is not a number is left out of the line.
    scores = " ".join(f"{key} {row[key]:.4f}" for key in ("train_loss", "train_acc", "val_loss", "val_acc",
                                                          "val_verif_acc")
                      if key in row and not math.isnan(float(row[key])))
    log.info("epoch %*d/%d %s lr %.2e — %s", len(str(max_epochs)), row["epoch"], max_epochs, scores, row["lr"], note)


def fit(net: nn.Module, data, prepare: Callable, optimizer: torch.optim.Optimizer, scheduler,
        stopper: EarlyStopping, settings: LoopSettings, reporter: EpochReporter | None = None,
        stop=None, resume: ResumePoint | None = None, ema=None) -> FitResult:
    """Train ``net`` on ``data.train`` for up to ``settings.max_epochs`` epochs.

    Each epoch is a training pass (:func:`train_one_epoch`) and its close (:func:`close_epoch`:
    validation, scheduler, one history row), then ``reporter.epoch_finished`` (history.csv,
    best.pt on a new best, last.pt). Stops early when ``stopper`` says so, when the loss stops
    being a finite number (diverged), or when ``stop.requested`` is set by a signal
    (interrupted: the unfinished epoch is dropped, so last.pt stays a clean resume point).
    ``resume`` (history, epoch, rng from last.pt) continues a run exactly where it stopped.
    ``ema`` (a training.regularisers.WeightAverage) is updated after every step and is what
    validation scores.
    """
    result = FitResult(best_epoch=stopper.best_epoch)
    keep_freed_memory(settings.device)  # CPU: no page faults for every step's tensors (see there)
    shared = _Pass(data, settings)
    start_epoch = 1
    if resume:
        result.history = list(resume.history)
        start_epoch = resume.epoch + 1
        restore_rng(resume.rng, shared.order)
        if stopper.should_stop:
            result.stop_reason = StopReason.EARLY_STOPPING
            return result
    epochs = tqdm(range(start_epoch, settings.max_epochs + 1), desc="epochs", unit="ep",
                  disable=None if settings.progress is None else not settings.progress,
                  initial=start_epoch - 1, total=settings.max_epochs)
    is_main = reporter is not None and settings.dist.is_main  # under DDP, rank 0 alone writes the run dir
    net.train()
    started = time.perf_counter()
    for epoch in epochs:
        t0 = time.perf_counter()
        if settings.epoch_start is not None:  # staged fine-tuning: the model (un)freezes its backbone
            settings.epoch_start(epoch)
            net.train()  # its train() keeps the BatchNorm statistics of frozen parts frozen
        totals, stopped = train_one_epoch(net, data, prepare, optimizer, settings, shared, epoch,
                                          stop=stop, ema=ema, quiet=epochs.disable, scheduler=scheduler)
        if stopped is StopReason.INTERRUPTED:
            log.warning("%s received during epoch %d: stopping; the unfinished epoch is dropped.",
                        stop.requested, epoch)
        elif stopped is StopReason.DIVERGED:
            log.error("epoch %d: the training loss is not a finite number — the run diverged; "
                      "try a lower optim.lr (now %g) or trainer.grad_clip=1.0.", epoch,
                      optimizer.param_groups[0]["lr"])
        if stopped is not None:
            result.stop_reason = stopped
            break
        if is_main:
            reporter.train_pass_finished()
        row, improved = close_epoch(ema.module if ema is not None else net, data, prepare, optimizer, scheduler,
                                    stopper, settings, totals, epoch, t0)
        result.history.append(row)
        result.best_epoch = stopper.best_epoch
        result.rng = capture_rng(shared.order)
        if is_main:
            reporter.epoch_finished(result, improved)
        log_epoch(row, stopper, improved, settings.max_epochs)
        epochs.set_postfix(**{stopper.monitor: f"{row[stopper.monitor]:.3f}"}, best=stopper.best_epoch)
        if stopper.should_stop:
            result.stop_reason = StopReason.EARLY_STOPPING
            log.info("Early stopping: no %s improvement for %d epochs (best epoch %d).",
                     stopper.monitor, stopper.patience, stopper.best_epoch)
            break
    epochs.close()
    result.train_seconds = time.perf_counter() - started
    return result

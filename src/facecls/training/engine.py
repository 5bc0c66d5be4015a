"""THE train/eval loop. Every model trains here.

Model-specific needs are data this loop reads, never branches on a model name: the optimizer
carries the param groups (frozen backbone = parameters left out, backbone LR = a group with
its own lr), a frozen backbone's cached features are simply the inputs of the data splits,
and the model's own ``train()`` keeps frozen parts in eval mode. What the loop is given and gives
back (LoopSettings, EarlyStopping, ResumePoint, FitResult, StopReason) lives in
:mod:`facecls.training.loop_types`; they are re-exported here for the importers of the loop.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from facecls.data.batches import iterate_batches
from facecls.inference.evaluate import evaluate
from facecls.training.loop_types import EarlyStopping, FitResult, LoopSettings, ResumePoint, StopReason
from facecls.training.runtime import capture_rng, keep_freed_memory, restore_rng

__all__ = [
    "FINITE_CHECK_STEPS", "EpochReporter", "EpochTotals", "batches_per_epoch", "optimizer_steps_per_epoch",
    "train_one_epoch", "close_epoch", "log_epoch", "fit",
    # the loop's values (facecls.training.loop_types), importable from here as before
    "EarlyStopping", "FitResult", "LoopSettings", "ResumePoint", "StopReason",
]

log = logging.getLogger(__name__)

FINITE_CHECK_STEPS = 25  # on a GPU: steps between two looks for a non-finite loss


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

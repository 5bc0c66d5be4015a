"""THE train/eval loop. Every model trains here.

Model-specific needs are data this loop reads, never branches on a model name: the optimizer
carries the param groups (frozen backbone = parameters left out, backbone LR = a group with
its own lr), a frozen backbone's cached features are simply the inputs of the data splits,
and the model's own ``train()`` keeps frozen parts in eval mode.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from facecls.config.checks import MONITORS
from facecls.data.batches import iterate_batches
from facecls.errors import UserError
from facecls.training.distributed import SINGLE, DistContext
from facecls.training.runtime import autocast, capture_rng, keep_freed_memory, restore_rng

log = logging.getLogger(__name__)

FINITE_CHECK_STEPS = 25  # on a GPU: steps between two looks for a non-finite loss


class EarlyStopping:
    """Track the monitored validation score; stop after ``patience`` epochs without an
    improvement larger than ``min_delta``. ``patience=None`` never stops (it only tracks
    the best epoch, which picks best.pt)."""

    def __init__(self, monitor: str = "val_acc", patience: int | None = None, min_delta: float = 0.0):
        if monitor not in MONITORS:
            raise UserError(f"unknown monitor '{monitor}' — use {' or '.join(MONITORS)}.")
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        self.sign = 1.0 if monitor == "val_acc" else -1.0  # higher val_acc / lower val_loss is better
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
class EvalSettings:
    """How to run a model over a split without training it."""

    device: torch.device
    batch_size: int = 256
    amp: bool = False
    progress: bool | None = None  # None: bars only on a terminal
    dist: DistContext = SINGLE  # DDP: each rank scores its share, the sums are all-reduced

    def autocast(self):
        return autocast(self.device, self.amp)


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

    @property
    def eval(self) -> EvalSettings:
        """The settings of the validation (and test) passes."""
        return EvalSettings(self.device, self.eval_batch_size, self.amp, self.progress, self.dist)

    def autocast(self):
        return autocast(self.device, self.amp)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    stop_reason: str = "max_epochs"
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


@torch.inference_mode()
def evaluate(net: nn.Module, split, prepare: Callable, settings: EvalSettings,
             return_predictions: bool = False, return_probabilities: bool = False):
    """Mean loss and accuracy over a split (and optionally every prediction and its probability;
    ``return_probabilities`` adds the whole softmax N×C as ``probabilities``, for per-class and
    calibration metrics). Under DDP each rank scores its share and the sums are all-reduced
    (not with predictions: those need every image in this process)."""
    return_predictions = return_predictions or return_probabilities
    was_training = net.training
    net.eval()
    dist = SINGLE if return_predictions else settings.dist
    total_loss, correct, count, preds, probs, full = 0.0, 0, 0, [], [], []
    for x, y in iterate_batches(split, settings.batch_size, rank=dist.rank, world_size=dist.world_size):
        y = y.to(settings.device, non_blocking=True)
        with settings.autocast():
            logits = net(prepare(x, train=False))
        logits = logits.float()
        total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        softmax = logits.softmax(1)
        p, pred = softmax.max(1)
        correct += (pred == y).sum().item()
        count += len(y)
        if return_predictions:
            preds.append(pred.cpu())
            probs.append(p.cpu())
            if return_probabilities:
                full.append(softmax.cpu())
    net.train(was_training)
    total_loss, correct, count = dist.sum(total_loss, correct, count)
    n = max(count, 1)
    result = {"loss": total_loss / n, "acc": correct / n}
    if return_predictions:
        result["predictions"] = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
        result["confidence"] = torch.cat(probs) if probs else torch.empty(0)
    if return_probabilities:
        result["probabilities"] = torch.cat(full) if full else torch.empty(0, 0)
    return result


def fit(net: nn.Module, data, prepare: Callable, optimizer: torch.optim.Optimizer, scheduler,
        stopper: EarlyStopping, settings: LoopSettings, reporter: EpochReporter | None = None,
        stop=None, resume: ResumePoint | None = None, ema=None) -> FitResult:
    """Train ``net`` on ``data.train`` for up to ``settings.max_epochs`` epochs.

    Each epoch: shuffled batches → forward → cross-entropy → backward → step; then the
    validation score, the scheduler step, one history row, and ``reporter.epoch_finished``
    (history.csv, best.pt on a new best, last.pt). Stops early when ``stopper`` says so, when the loss stops
    being a finite number ('diverged'), or when ``stop.requested`` is set by a signal
    ('interrupted': the unfinished epoch is dropped, so last.pt stays a clean resume point).
    ``resume`` (history, epoch, rng from last.pt) continues a run exactly where it stopped.
    ``ema`` (a training.regularisers.WeightAverage) is updated after every step and is what
    validation scores.
    """
    result = FitResult(best_epoch=stopper.best_epoch)
    keep_freed_memory(settings.device)  # CPU: no page faults for every step's tensors (see there)
    weight = torch.tensor(settings.class_weights, device=settings.device) if settings.class_weights else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=settings.label_smoothing)
    scaler = torch.amp.GradScaler(enabled=settings.amp and settings.device.type == "cuda"
                                  and not torch.cuda.is_bf16_supported())
    order = torch.Generator().manual_seed(settings.seed)  # the batch order, reproducible from the seed
    start_epoch = 1
    if resume:
        result.history = list(resume.history)
        start_epoch = resume.epoch + 1
        restore_rng(resume.rng, order)
        if stopper.should_stop:
            result.stop_reason = "early_stopping"
            return result
    width = len(str(settings.max_epochs))
    n_batches = math.ceil(math.ceil(len(data.train) / settings.dist.world_size) / settings.batch_size)
    limit = settings.limit_batches
    if limit is not None:
        n_batches = min(n_batches, max(1, int(limit) if limit >= 1 else math.ceil(n_batches * limit)))
    epochs = tqdm(range(start_epoch, settings.max_epochs + 1), desc="epochs", unit="ep",
                  disable=None if settings.progress is None else not settings.progress,
                  initial=start_epoch - 1, total=settings.max_epochs)
    net.train()
    started = time.perf_counter()
    # A non-finite loss is looked for before each step on the CPU (free there); on a GPU that
    # look is a host-device sync, so it checks the epoch's running loss sum every few steps.
    check_every = 1 if settings.device.type == "cpu" else FINITE_CHECK_STEPS
    for epoch in epochs:
        t0 = time.perf_counter()
        # Sums stay on the device and are read once per epoch: no host-device sync per step.
        seen = 0
        loss_sum = torch.zeros((), dtype=torch.float64, device=settings.device)
        correct = torch.zeros((), dtype=torch.int64, device=settings.device)
        batches = tqdm(iterate_batches(data.train, settings.batch_size, shuffle=True, generator=order,
                                      rank=settings.dist.rank, world_size=settings.dist.world_size,
                                      balanced=settings.balanced_sampling),
                       total=n_batches, desc=f"epoch {epoch}", leave=False, unit="batch", disable=epochs.disable)
        for step, (x, y) in enumerate(batches):
            if step == n_batches:
                break
            x, y = prepare(x, train=True), y.to(settings.device, non_blocking=True)
            target = y
            if settings.mixer is not None:  # MixUp/CutMix: mixed images, label probabilities
                x, target = settings.mixer(x, y)
                y = target.argmax(1)  # training accuracy counts the dominant label of each mix
            with settings.autocast():
                logits = net(x)
                loss = criterion(logits.float(), target)
            if check_every == 1 and settings.dist.any(not torch.isfinite(loss)):  # DDP: all ranks stop together
                result.stop_reason = "diverged"
                break
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if settings.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(net.parameters(), settings.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update()
            n = len(y)
            seen += n
            loss_sum += loss.detach().double() * n
            correct += (logits.argmax(1) == y).sum()
            if check_every > 1 and (step + 1) % check_every == 0 and \
                    settings.dist.any(not torch.isfinite(loss_sum)):
                result.stop_reason = "diverged"
                break
            if stop is not None and settings.dist.any(stop.requested):
                result.stop_reason = "interrupted"
                break
        if result.stop_reason not in ("interrupted", "diverged") and check_every > 1 and \
                settings.dist.any(not torch.isfinite(loss_sum)):
            result.stop_reason = "diverged"
        if result.stop_reason not in ("interrupted", "diverged") and reporter is not None and settings.dist.is_main:
            reporter.train_pass_finished()
        if result.stop_reason == "interrupted":
            log.warning("%s received during epoch %d: stopping; the unfinished epoch is dropped.",
                        stop.requested, epoch)
            break
        if result.stop_reason == "diverged":
            log.error("epoch %d: the training loss is not a finite number — the run diverged; "
                      "try a lower optim.lr (now %g) or trainer.grad_clip=1.0.", epoch,
                      optimizer.param_groups[0]["lr"])
            break
        seen, loss_sum, correct = settings.dist.sum(seen, loss_sum.item(), correct.item())
        val = evaluate(ema.module if ema is not None else net, data.val, prepare, settings.eval)
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:  # an EpochSchedule (facecls.training.schedules)
            scheduler.step(stopper.sign * val["loss" if stopper.monitor == "val_loss" else "acc"])
        row = {"epoch": epoch, "lr": float(lr), "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "val_loss": val["loss"], "val_acc": val["acc"], "seconds": time.perf_counter() - t0}
        result.history.append(row)
        improved = stopper.step(epoch, row[stopper.monitor])
        result.best_epoch = stopper.best_epoch
        result.rng = capture_rng(order)
        if reporter is not None and settings.dist.is_main:  # under DDP, rank 0 alone writes the run dir
            reporter.epoch_finished(result, improved)
        note = "new best" if improved else "not a better score" + (
            f" ({stopper.bad_epochs}/{stopper.patience})" if stopper.patience is not None else "")
        log.info("epoch %*d/%d train_loss %.4f train_acc %.4f val_loss %.4f val_acc %.4f lr %.2e — %s",
                 width, epoch, settings.max_epochs, row["train_loss"], row["train_acc"], row["val_loss"],
                 row["val_acc"], lr, note)
        epochs.set_postfix(val_acc=f"{val['acc']:.3f}", best=stopper.best_epoch)
        if stopper.should_stop:
            result.stop_reason = "early_stopping"
            log.info("Early stopping: no %s improvement for %d epochs (best epoch %d).",
                     stopper.monitor, stopper.patience, stopper.best_epoch)
            break
    epochs.close()
    result.train_seconds = time.perf_counter() - started
    return result

"""What the training loop (:func:`facecls.training.engine.fit`) is given and gives back: its
settings, the early-stopping tracker, where a resumed run continues, and the result with the
reason it stopped. Small types without the loop in them: the run assembly, resume, open-set
validation and the run's outputs use them without importing the loop."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

import torch

from facecls.config.checks import MONITORS
from facecls.errors import UserError
from facecls.inference.device import autocast
from facecls.inference.evaluate import EvalSettings
from facecls.training.distributed import SINGLE, DistContext


class StopReason(str, Enum):
    """Why ``fit`` returned; its value is what metrics.json, checkpoints and trackers record."""

    MAX_EPOCHS = "max_epochs"
    EARLY_STOPPING = "early_stopping"
    DIVERGED = "diverged"        # the training loss stopped being a finite number
    INTERRUPTED = "interrupted"  # a signal (Ctrl-C, SIGTERM): the unfinished epoch is dropped

    def __str__(self) -> str:
        return self.value


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

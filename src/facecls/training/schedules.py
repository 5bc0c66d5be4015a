"""Learning-rate schedules: the `sched` group's torch scheduler (StepLR, CosineAnnealingLR,
OneCycleLR, ReduceLROnPlateau, …), with an optional linear warm-up before it, stepped once per
epoch (``sched.interval=epoch``, the default) or after every optimizer step (``sched.interval=step``).

Warm-up: over ``w`` periods (epochs, or steps) the learning rate of every param group climbs
linearly to its own value — period k (1 ≤ k ≤ w) trains at k/(w+1) of it — and from period w+1
on the schedule runs as it would have from its first. That is torch's
``SequentialLR([LinearLR(start_factor=1/(w+1), total_iters=w), main], milestones=[w])``.
With ``interval=step`` the warm-up is ``sched.warmup_epochs`` × steps per epoch +
``sched.warmup_steps``, and the keys ``sched.per_epoch`` names (cosine's ``T_max``, one-cycle's
``total_steps``, StepLR's ``step_size``: lengths the yaml writes in epochs) are multiplied by the
optimizer steps per epoch. The keys ``sched.per_group`` names (one-cycle's ``max_lr``) are given for
the first param group and scaled to each group's own LR, so a backbone's smaller LR (``backbone_lr_mult``,
``layer_decay``) keeps its ratio under the schedule. ReduceLROnPlateau gets the monitored score once
per epoch (higher is better: val_loss is handed over negated, so its ``mode`` is always ``max``).
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from facecls.config.instantiate import instantiate
from facecls.errors import UserError

INTERVALS = ("epoch", "step")


class EpochSchedule:
    """``main`` (a torch scheduler, or None for a constant LR) after ``warmup_epochs`` periods; a
    period is an epoch, or with ``interval='step'`` an optimizer step (the engine then calls
    :meth:`step_batch` after each)."""

    def __init__(self, optimizer, main=None, warmup_epochs: int = 0, interval: str = "epoch"):
        self.optimizer, self.main, self.warmup_epochs = optimizer, main, int(warmup_epochs)
        self.per_step = interval == "step"
        self.epochs_done = 0  # periods of the schedule taken (steps with interval=step)
        self.last_lr = optimizer.param_groups[0]["lr"]  # interval=step: the LR of the last step taken
        self.target_lrs = [group["lr"] for group in optimizer.param_groups]  # what warm-up climbs to
        if self.warmup_epochs:
            self._set_warmup_lrs()

    @property
    def needs_score(self) -> bool:
        return getattr(self.main, "mode", None) is not None  # ReduceLROnPlateau

    def _set_warmup_lrs(self) -> None:
        factor = (self.epochs_done + 1) / (self.warmup_epochs + 1)
        for group, lr in zip(self.optimizer.param_groups, self.target_lrs):
            group["lr"] = lr * factor

    @property
    def epoch_lr(self) -> float:
        """The first group's LR the finished epoch trained at (interval=step: at its last step)."""
        return self.last_lr if self.per_step else self.optimizer.param_groups[0]["lr"]

    def step(self, score: float) -> None:
        """After an epoch: ``score`` is the monitored validation score, higher = better."""
        if not self.per_step:
            self._advance(score)

    def step_batch(self) -> None:
        """After an optimizer step (interval=step), as torch's ``scheduler.step()``."""
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self._advance(None)

    def _advance(self, score: float | None) -> None:
        self.epochs_done += 1
        if self.epochs_done < self.warmup_epochs:
            self._set_warmup_lrs()
        elif self.epochs_done == self.warmup_epochs:
            for group, lr in zip(self.optimizer.param_groups, self.target_lrs):
                group["lr"] = lr
        elif self.main is not None:
            self.main.step(score) if self.needs_score else self.main.step()

    def state_dict(self) -> dict:
        return {"epochs_done": self.epochs_done, "target_lrs": list(self.target_lrs), "last_lr": self.last_lr,
                "main": self.main.state_dict() if self.main is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if "epochs_done" not in state:  # a checkpoint from before warm-up existed: the torch scheduler's own
            state = {"epochs_done": self.warmup_epochs + 1, "target_lrs": self.target_lrs, "main": state}
        self.epochs_done, self.target_lrs = int(state["epochs_done"]), list(state["target_lrs"])
        self.last_lr = state.get("last_lr", self.last_lr)
        if self.main is not None and state["main"] is not None:
            self.main.load_state_dict(state["main"])


def _count(options: dict, key: str) -> int:
    value = options.pop(key, 0) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"sched.{key}={value} is invalid — use a whole number >= 0.")
    return value


def build_schedule(sched_cfg: DictConfig | None, optimizer, steps_per_epoch: int = 1) -> EpochSchedule | None:
    """The schedule the `sched` config describes (None: a constant LR and no warm-up).

    Args:
        sched_cfg: the `sched` group (its torch scheduler's ``_target_`` and arguments, ``warmup_epochs``,
            ``warmup_steps``, ``interval``, ``per_epoch``).
        optimizer: the run's optimizer (its param groups' LRs are what the schedule scales).
        steps_per_epoch: optimizer steps of one epoch (engine.optimizer_steps_per_epoch); used by interval=step.
    """
    if not sched_cfg:
        return None
    options = OmegaConf.to_container(sched_cfg, resolve=True)
    interval = options.pop("interval", "epoch") or "epoch"
    if interval not in INTERVALS:
        raise UserError(f"sched.interval={interval} is invalid — choose one of: {', '.join(INTERVALS)}.")
    warmup, warmup_steps = _count(options, "warmup_epochs"), _count(options, "warmup_steps")
    per_epoch = options.pop("per_epoch", None) or []
    if interval == "step":
        warmup = warmup * int(steps_per_epoch) + warmup_steps
        for key in per_epoch:  # lengths written in epochs, counted in optimizer steps
            options[key] = int(options[key]) * int(steps_per_epoch)
    elif warmup_steps:
        raise UserError(f"sched.warmup_steps={warmup_steps} needs sched.interval=step — set it, or use "
                        "sched.warmup_epochs.")
    base = optimizer.param_groups[0]["lr"] or 1.0  # the first group trains at optim.lr (the new layer)
    for key in options.pop("per_group", None) or []:  # one-cycle's max_lr: each group's own share of it
        options[key] = [float(options[key]) * group["lr"] / base for group in optimizer.param_groups]
    main = instantiate(options, what=f"scheduler {options['_target_']}", optimizer=optimizer, _convert_="partial") \
        if "_target_" in options else None  # partial: a per-group list reaches torch as a list
    if main is None and not warmup:
        return None
    schedule = EpochSchedule(optimizer, main, warmup, interval)
    if schedule.per_step and schedule.needs_score:
        raise UserError(f"sched.interval=step does not fit {type(main).__name__}: it needs a validation score, "
                        "known once per epoch — use sched.interval=epoch.")
    return schedule

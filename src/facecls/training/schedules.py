"""Learning-rate schedules, stepped once per epoch: the `sched` group's torch scheduler
(StepLR, CosineAnnealingLR, OneCycleLR, ReduceLROnPlateau, …), with an optional linear
warm-up before it (``sched.warmup_epochs``).

Warm-up: over ``w`` epochs the learning rate of every param group climbs linearly to its
own value — epoch k (1 ≤ k ≤ w) trains at k/(w+1) of it — and from epoch w+1 on the
schedule runs as it would have from epoch 1. ReduceLROnPlateau gets the monitored score
(higher is better: val_loss is handed over negated, so its ``mode`` is always ``max``).
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from facecls.config.instantiate import instantiate
from facecls.errors import UserError


class EpochSchedule:
    """``main`` (a torch scheduler, or None for a constant LR) after ``warmup_epochs``."""

    def __init__(self, optimizer, main=None, warmup_epochs: int = 0):
        self.optimizer, self.main, self.warmup_epochs = optimizer, main, int(warmup_epochs)
        self.epochs_done = 0
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

    def step(self, score: float) -> None:
        """After an epoch: ``score`` is the monitored validation score, higher = better."""
        self.epochs_done += 1
        if self.epochs_done < self.warmup_epochs:
            self._set_warmup_lrs()
        elif self.epochs_done == self.warmup_epochs:
            for group, lr in zip(self.optimizer.param_groups, self.target_lrs):
                group["lr"] = lr
        elif self.main is not None:
            self.main.step(score) if self.needs_score else self.main.step()

    def state_dict(self) -> dict:
        return {"epochs_done": self.epochs_done, "target_lrs": list(self.target_lrs),
                "main": self.main.state_dict() if self.main is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if "epochs_done" not in state:  # a checkpoint from before warm-up existed: the torch scheduler's own
            state = {"epochs_done": self.warmup_epochs + 1, "target_lrs": self.target_lrs, "main": state}
        self.epochs_done, self.target_lrs = int(state["epochs_done"]), list(state["target_lrs"])
        if self.main is not None and state["main"] is not None:
            self.main.load_state_dict(state["main"])


def build_schedule(sched_cfg: DictConfig | None, optimizer) -> EpochSchedule | None:
    """The schedule the `sched` config describes (None: a constant LR and no warm-up)."""
    if not sched_cfg:
        return None
    options = OmegaConf.to_container(sched_cfg, resolve=True)
    warmup = options.pop("warmup_epochs", 0) or 0
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise UserError(f"sched.warmup_epochs={warmup} is invalid — use a whole number >= 0.")
    main = instantiate(options, what=f"scheduler {options['_target_']}", optimizer=optimizer) \
        if "_target_" in options else None
    if main is None and not warmup:
        return None
    return EpochSchedule(optimizer, main, warmup)

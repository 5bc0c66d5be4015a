"""Checkpoints: the one typed definition of what a checkpoint holds, and its reader.

On disk a checkpoint is plain data only (tensors, numbers, strings, lists, dicts), so it
loads with ``torch.load(weights_only=True)`` — a checkpoint can never run code on the
loading machine. :class:`Checkpoint` is the one place its keys are named; every reader
(eval, resume, inspect, robustness, rf) goes through :func:`load_checkpoint`; training's
CheckpointWriter (facecls.training.checkpoint) writes them with :func:`save_checkpoint`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from facecls.data.preprocess import Preprocess
from facecls.errors import UserError
from facecls.io import atomic_torch_save, safe_torch_load
from facecls.models.legacy import upgrade_checkpoint

FORMAT = "facecls-checkpoint/1"


@dataclass
class Checkpoint:
    """What best.pt and last.pt hold. Only last.pt carries the resume state (optimizer,
    scheduler, random states); best.pt is for inference."""

    model: dict                  # the whole model's state_dict
    config: dict                 # the run's resolved training config
    classes: list[str]
    preprocess: dict             # Preprocess as a dict
    epoch: int                   # the last finished epoch when it was written
    optimizer: dict | None = None
    scheduler: dict | None = None
    early_stopping: dict | None = None
    history: list[dict] = field(default_factory=list)
    stop_reason: str | None = None
    rng: dict | None = None
    ema: dict | None = None      # last.pt with trainer.ema: the weight average's own state
    loss_head: dict | None = None  # a model with model.embedding_dim: its loss head (margin centres or linear
    #                                layer), needed to resume; not part of the model verify/enroll/export use

    @property
    def resumable(self) -> bool:
        return bool(self.rng) and self.optimizer is not None

    def preprocessing(self) -> Preprocess:
        return Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.preprocess.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> Path:
    """Write a checkpoint atomically (a crash leaves the previous file intact), past the page
    cache: a run rewrites it every epoch and rarely reads it back (facecls.direct_write); without
    the zip's CRC-32, which torch.load never checks (facecls.io.atomic_torch_save)."""
    return atomic_torch_save(checkpoint.to_dict(), path, direct=True, crc32=False)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a facecls checkpoint, refusing anything that is not plain data."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist — pass ckpt=<run dir>/checkpoints/best.pt.")
    data = safe_torch_load(path, what="checkpoint", allowed="plain data",
                           fix="pass a checkpoints/best.pt or last.pt written by facecls.", map_location=map_location)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"'{path}' is not a facecls checkpoint — pass a checkpoints/best.pt or "
                        "last.pt from a facecls run dir.")
    return Checkpoint.from_dict(upgrade_checkpoint(data, str(path)))

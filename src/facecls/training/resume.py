"""Restore an interrupted run from its checkpoints/last.pt (the arguments are rewritten
before Hydra composes, see facecls.config.resume_args)."""
from __future__ import annotations

import logging
from pathlib import Path

from facecls.errors import UserError
from facecls.inference.checkpoint import Checkpoint, load_checkpoint
from facecls.models.base import restore_model
from facecls.training.loop_types import ResumePoint

log = logging.getLogger(__name__)


def load_resume_checkpoint(run_dir: Path) -> Checkpoint | None:
    """checkpoints/last.pt of ``run_dir``, or None to start from scratch."""
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        log.info("No checkpoints/last.pt in %s yet: starting from epoch 1.", run_dir)
        return None
    ckpt = load_checkpoint(last)
    if not ckpt.resumable:
        raise UserError(f"{last} has no resume state — it was not written by facecls train; start a new run.")
    log.info("Resuming from %s (epoch %d finished).", last, ckpt.epoch)
    return ckpt


def restore_training_state(ckpt: Checkpoint, model, optimizer, scheduler, stopper, ema=None,
                           loss_head=None) -> ResumePoint:
    """Put weights, loss head, optimizer, scheduler, early-stopping counter and weight average back;
    return where ``fit`` continues (epoch, history, random states)."""
    restore_model(model, ckpt.model, source="checkpoints/last.pt")
    if loss_head is not None:
        if ckpt.loss_head is None:
            raise UserError("checkpoints/last.pt has no loss head (it was trained without model.embedding_dim) "
                            "— resume with the config it was trained with, or start a new run.")
        restore_model(loss_head, ckpt.loss_head, source="checkpoints/last.pt (loss head)")
    optimizer.load_state_dict(ckpt.optimizer)
    if scheduler is not None and ckpt.scheduler:
        scheduler.load_state_dict(ckpt.scheduler)
    stopper.load_state_dict(ckpt.early_stopping)
    if ema is not None and ckpt.ema is not None:
        ema.load_state_dict(ckpt.ema)
    return ResumePoint(epoch=ckpt.epoch, history=list(ckpt.history), rng=ckpt.rng)

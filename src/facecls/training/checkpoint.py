"""The checkpoint writer a training run uses (what a checkpoint holds and how it is read:
facecls.inference.checkpoint)."""
from __future__ import annotations

import copy
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facecls.data.preprocess import Preprocess
from facecls.errors import UserError
from facecls.inference.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


def cpu_copy(value: Any) -> Any:
    """A snapshot of (nested dicts/lists of) tensors in CPU memory, so training can go on
    changing the originals while the snapshot is written."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(v) for v in value)
    return value


class CheckpointWriter:
    """Writes a run's checkpoints/best.pt and last.pt at the end of an epoch, off the
    training thread: the state is copied to CPU memory at once (so it is exactly the state
    at the epoch end) and written and renamed atomically in the background while the next
    epoch runs. At most one write of each kind is in flight; :meth:`wait` finishes them
    (the run calls it before it scores the test split, and on every way out).

    With ``enabled=False`` (debug=fast) nothing is written: the best weights are only kept
    in memory, so the test split is still scored with the best epoch's model.
    """

    def __init__(self, ckpt_dir: Path, *, model: nn.Module, optimizer, scheduler, stopper, config: dict,
                 classes: list[str], preprocess: Preprocess, enabled: bool = True, ema=None):
        self.ckpt_dir, self.enabled = Path(ckpt_dir), enabled
        self.model, self.optimizer, self.scheduler, self.stopper = model, optimizer, scheduler, stopper
        self.config, self.classes, self.preprocess = config, list(classes), asdict(preprocess)
        self._best_state: dict | None = None  # the best epoch's weights, in CPU memory
        self.ema = ema  # a WeightAverage: best.pt then holds the averaged weights, last.pt both
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint") if enabled else None
        self._copier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
        self._snapshot: Future | None = None
        self._pending: dict[str, tuple[Path, Future]] = {}

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / "best.pt"

    def snapshot(self) -> None:
        """Start copying the epoch's weights, optimizer state and weight average to CPU memory
        on a helper thread, while the main thread runs the validation pass (which changes
        none of them); :meth:`epoch_finished` picks the copy up."""
        self._snapshot = self._copier.submit(self._copy_state)

    def _copy_state(self) -> dict:
        return {"raw": cpu_copy(self.model.state_dict()),
                "best": cpu_copy(self.ema.model_state(self.model)) if self.ema is not None else None,
                "optimizer": cpu_copy(self.optimizer.state_dict()),
                "ema": cpu_copy(self.ema.state_dict()) if self.ema is not None else None}

    def epoch_finished(self, result, improved: bool) -> None:
        """Hand best.pt (on a new best) and last.pt of this epoch to the writer thread.
        ``result`` is the FitResult so far (history, rng). The raw weights are copied once and
        shared by both files unless best.pt holds the weight average."""
        state = self._snapshot.result() if self._snapshot is not None else self._copy_state()
        self._snapshot = None
        # The scheduler stepped after the snapshot: the learning rates in the optimizer's state
        # are those of the coming epoch now (plain numbers, no tensors to copy).
        state["optimizer"]["param_groups"] = copy.deepcopy(self.optimizer.state_dict()["param_groups"])
        if improved:
            self._best_state = state["best"] if state["best"] is not None else state["raw"]
        if not self.enabled:
            return
        if improved:
            self._submit("best", self._checkpoint(self._best_state, result, None, None))
        self._submit("last", self._checkpoint(state["raw"], result, state["optimizer"], state["ema"]))

    def _checkpoint(self, weights: dict, result, optimizer: dict | None, ema: dict | None) -> Checkpoint:
        """best.pt (no optimizer: for inference) or last.pt (with all a resume needs)."""
        resumable = optimizer is not None
        return Checkpoint(
            model=weights, config=self.config, classes=self.classes,
            preprocess=self.preprocess, epoch=int(result.history[-1]["epoch"]), optimizer=optimizer,
            scheduler=copy.deepcopy(self.scheduler.state_dict()) if resumable and self.scheduler is not None else None,
            early_stopping=dict(self.stopper.state_dict()), history=list(result.history),
            stop_reason=str(result.stop_reason), rng=result.rng if resumable else None, ema=ema)

    def _submit(self, kind: str, checkpoint: Checkpoint) -> None:
        if kind in self._pending:  # at most one write of each kind in flight
            self._finish(*self._pending.pop(kind))
        path = self.ckpt_dir / f"{kind}.pt"
        self._pending[kind] = (path, self._pool.submit(save_checkpoint, path, checkpoint))

    def wait(self) -> None:
        """Block until every checkpoint handed over so far is on disk (a failed write → UserError)."""
        pending, self._pending = list(self._pending.values()), {}
        for path, future in pending:
            self._finish(path, future)

    def close(self) -> None:
        """:meth:`wait`, then let the writer thread go."""
        try:
            self.wait()
        finally:
            self._copier.shutdown(wait=True)
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    @staticmethod
    def _finish(path: Path, future: Future) -> None:
        try:
            future.result()
        except OSError as err:
            raise UserError(f"could not write {path}: {err.strerror or err} — free some disk space "
                            "(or fix permissions) and resume; the previous checkpoint is intact.") from None

    def best_weights(self, device: torch.device) -> dict | None:
        """The best epoch's state_dict (from memory, or best.pt of a resumed run), None when
        no epoch finished. Waits for the writes in flight."""
        self.wait()
        if self._best_state is not None:
            return self._best_state
        if self.best_path.is_file():
            return load_checkpoint(self.best_path, map_location=device).model
        return None

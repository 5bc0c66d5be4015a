"""The checkpoint writer a training run uses (what a checkpoint holds and how it is read:
facecls.inference.checkpoint)."""
from __future__ import annotations

import copy
import logging
import os
import sys
import threading
import time
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


def remove_stale_temp_files(ckpt_dir: Path) -> list[Path]:
    """Temp files of checkpoint writes a killed process left behind (``.last.pt.*.tmp``): a run dir
    is trained by one process at a time, so at its start no write of it is in flight."""
    stale = [p for kind in ("best", "last") for p in Path(ckpt_dir).glob(f".{kind}.pt.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("Removed %d unfinished checkpoint temp file(s) of an earlier process in %s.", len(stale), ckpt_dir)
    return stale


def _yield_cores() -> None:
    """The writer thread runs at a lower priority (Linux: nice is per thread), so serialising a
    checkpoint takes the cores only when training leaves them idle."""
    if sys.platform == "linux":
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:  # pragma: no cover - a sandbox that forbids it: write at normal priority
            pass


class CheckpointWriter:
    """Writes a run's checkpoints/best.pt and last.pt at the end of an epoch, off the
    training thread: the state is copied to CPU memory at once (so it is exactly the state
    at the epoch end) and written and renamed atomically in the background while the next
    epoch runs. At most one write of each kind is in flight; :meth:`wait` finishes them
    (the run calls it before it scores the test split, and on every way out).

    The promise after any way out, kill -9 included: last.pt is at most one finished epoch
    behind history.csv (``every_n_epochs`` epochs with that setting), because the recorder waits
    for the previous epoch's writes before it adds a row (back-pressure, never skipping);
    last.pt is written before best.pt, so best.pt is never newer than the resume point; temp files
    of a killed write are removed when the same run dir starts again.

    Args:
        enabled: False (``trainer.checkpoints=false``, debug=fast): nothing is written; the best
            weights are kept in memory, so the test split is still scored with the best epoch's model.
        every_n_epochs: write last.pt after every n-th epoch (and after the last finished one).
        last: False: no last.pt at all (no resume; best.pt only).
    """

    def __init__(self, ckpt_dir: Path, *, model: nn.Module, optimizer, scheduler, stopper, config: dict,
                 classes: list[str], preprocess: Preprocess, enabled: bool = True, ema=None,
                 every_n_epochs: int = 1, last: bool = True, loss_head: nn.Module | None = None):
        self.ckpt_dir, self.enabled = Path(ckpt_dir), enabled
        if not isinstance(every_n_epochs, int) or isinstance(every_n_epochs, bool) or every_n_epochs < 1:
            raise UserError(f"trainer.checkpoint.every_n_epochs must be a whole number ≥ 1, not {every_n_epochs!r} "
                            "— e.g. trainer.checkpoint.every_n_epochs=5.")
        self.every_n_epochs, self.write_last = every_n_epochs, bool(last)
        self._unwritten: Checkpoint | None = None  # last.pt of a finished epoch every_n_epochs skipped
        self.wait_seconds = 0.0  # how long training waited for writes (back-pressure + the final wait)
        if enabled:
            remove_stale_temp_files(self.ckpt_dir)
        self.model, self.optimizer, self.scheduler, self.stopper = model, optimizer, scheduler, stopper
        self.config, self.classes, self.preprocess = config, list(classes), asdict(preprocess)
        self._best_state: dict | None = None  # the best epoch's weights, in CPU memory
        self.ema = ema  # a WeightAverage: best.pt then holds the averaged weights, last.pt both
        self.loss_head = loss_head  # a margin/linear loss head (issue 23): saved beside the model, not in it
        self.best_loss_head: dict | None = None  # the best epoch's loss head, in CPU memory
        self._pool = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint", initializer=_yield_cores)
                      if enabled else None)
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
                "ema": cpu_copy(self.ema.state_dict()) if self.ema is not None else None,
                "loss_head": cpu_copy(self.loss_head.state_dict()) if self.loss_head is not None else None}

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
            self.best_loss_head = state["loss_head"]
        if not self.enabled:
            return
        if self.write_last:  # before best.pt: the one writer thread keeps best.pt never newer than last.pt
            last = self._checkpoint(state["raw"], result, state["optimizer"], state["ema"], state["loss_head"])
            self._unwritten = None
            if last.epoch % self.every_n_epochs == 0:
                self._submit("last", last)
            else:
                self._unwritten = last
        if improved:
            self._submit("best", self._checkpoint(self._best_state, result, None, None, self.best_loss_head))

    def flush(self) -> None:
        """Hand over last.pt of the last finished epoch if ``every_n_epochs`` skipped it (the run
        calls it on every way out, so a stopped run can always resume where it stopped)."""
        if self._unwritten is not None:
            self._submit("last", self._unwritten)
            self._unwritten = None

    def _checkpoint(self, weights: dict, result, optimizer: dict | None, ema: dict | None,
                    loss_head: dict | None = None) -> Checkpoint:
        """best.pt (no optimizer: for inference) or last.pt (with all a resume needs)."""
        resumable = optimizer is not None
        return Checkpoint(
            model=weights, config=self.config, classes=self.classes,
            preprocess=self.preprocess, epoch=int(result.history[-1]["epoch"]), optimizer=optimizer,
            scheduler=copy.deepcopy(self.scheduler.state_dict()) if resumable and self.scheduler is not None else None,
            early_stopping=dict(self.stopper.state_dict()), history=list(result.history),
            stop_reason=str(result.stop_reason), rng=result.rng if resumable else None, ema=ema,
            loss_head=loss_head)

    def _submit(self, kind: str, checkpoint: Checkpoint) -> None:
        if kind in self._pending:  # at most one write of each kind in flight
            self._finish(*self._pending.pop(kind))
        path = self.ckpt_dir / f"{kind}.pt"
        self._pending[kind] = (path, self._pool.submit(save_checkpoint, path, checkpoint))

    def wait(self) -> None:
        """Block until every checkpoint handed over so far is on disk (a failed write → UserError)."""
        pending, self._pending = list(self._pending.values()), {}
        started = time.perf_counter()
        try:
            for path, future in pending:
                self._finish(path, future)
        finally:
            self.wait_seconds += time.perf_counter() - started

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

    def best_weights(self, device: torch.device, wait: bool = True) -> dict | None:
        """The best epoch's state_dict (from memory, or best.pt of a resumed run), None when
        no epoch finished. Waits for the writes in flight (``wait=False``: only when it has to read best.pt)."""
        if wait:
            self.wait()
        if self._best_state is not None:
            return self._best_state
        self.wait()
        if self.best_path.is_file():
            return load_checkpoint(self.best_path, map_location=device).model
        return None

"""What a run leaves behind: history.csv and the checkpoints after every epoch
(:class:`RunRecorder`), then the test score of the best checkpoint, metrics.json,
curves.png, confusion_matrix.png, per_class.csv and reliability.png/.csv (:func:`finish_run`)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from facecls.inference.confusion import write_most_confused
from facecls.inference.evaluate import EvalSettings
from facecls.inference.metrics import TOP_K
from facecls.inference.scoring import metric_entries, score_split, write_score_files
from facecls.io import atomic_write_json, atomic_write_text, csv_text
from facecls.plots import plot_confusion, plot_curves
from facecls.timing import CLOCK
from facecls.training.checkpoint import CheckpointWriter
from facecls.training.loop_types import FitResult

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]
OPEN_SET_COLUMNS = ["val_verif_acc"]  # training.open_set: margin-loss or identity-split runs only


def write_history(path: Path, history: list[dict]) -> None:
    # full precision (str of a float is its shortest exact form): metrics.json must match
    # open-set runs add val_verif_acc before seconds; classifier runs keep exactly HISTORY_COLUMNS
    columns = HISTORY_COLUMNS[:-1] + [k for k in OPEN_SET_COLUMNS if history and k in history[0]] + ["seconds"]
    atomic_write_text(path, csv_text(columns, ([row[k] for k in columns] for row in history)))


class RunRecorder:
    """The one place ``fit`` reports a finished epoch to: history.csv, then best.pt (on a
    new best) and last.pt."""

    def __init__(self, run_dir: Path, checkpoints: CheckpointWriter):
        self.run_dir, self.checkpoints = Path(run_dir), checkpoints

    def train_pass_finished(self) -> None:
        self.checkpoints.snapshot()

    def epoch_finished(self, result: FitResult, improved: bool) -> None:
        # Back-pressure: the previous epoch's checkpoints are on disk before history.csv gets
        # this epoch's row, so after a kill -9 last.pt is at most one finished epoch behind it.
        self.checkpoints.wait()
        write_history(self.run_dir / "history.csv", result.history)
        self.checkpoints.epoch_finished(result, improved)


def finish_run(run_dir: Path, model, trained, data, prepare, settings: EvalSettings, result: FitResult,
               best_weights: dict | None, extra: dict, before_metrics: Callable[[], None] | None = None,
               timing: dict | None = None, open_set=None) -> dict:
    """Load ``best_weights`` into ``model``, score the test split through ``trained`` (the
    module that trained: the model itself, or its head on cached features), write
    metrics.json and the figures. ``before_metrics`` runs just before metrics.json is written
    (the run waits there for its last checkpoint write, which went on beside the test pass and
    the figures: a run dir with metrics.json is a finished one); metrics.json's ``timing`` holds the
    process's phases (facecls.timing) plus ``timing``."""
    best_row = next((r for r in result.history if r["epoch"] == result.best_epoch), None)
    metrics = {
        "best_epoch": result.best_epoch or None,
        "best_val_acc": best_row["val_acc"] if best_row else None,
        "best_val_loss": best_row["val_loss"] if best_row else None,
        "best_train_acc": best_row["train_acc"] if best_row else None,
        "best_train_loss": best_row["train_loss"] if best_row else None,
        "test_acc": None,
        "test_loss": None,
        # per-class and calibration summary of the test split (per_class.csv, reliability.png)
        "test_macro_f1": None,
        "test_weighted_f1": None,
        "test_balanced_acc": None,
        f"test_top{TOP_K}_acc": None,  # only with more than TOP_K classes
        "test_ece": None,
        "test_nll": None,
        "epochs_run": len(result.history),
        "stop_reason": str(result.stop_reason),
        "skipped_files": len(data.skipped),
        "skipped": data.skipped,
        "duplicates_across_splits": len(data.duplicates),
        "duplicate_examples": data.duplicates[:10],
        "near_duplicates_across_splits": len(data.near_duplicates),
        "near_duplicate_examples": data.near_duplicates[:10],
        "num_classes": len(data.classes),
        "classes": list(data.classes),
        "train_size": len(data.train),
        "val_size": len(data.val),
        "test_size": len(data.test),
    }
    if best_weights is not None:
        model.load_state_dict(best_weights)
        if open_set is not None:  # training.open_set.OpenSetTest: verification on the test people
            metrics.update(open_set(trained, data, prepare, settings, best_row))
    if best_weights is not None and (open_set is None or open_set.closed_set):
        test = score_split(trained, data.test, prepare, settings, len(data.classes))
        CLOCK.lap("test")
        metrics["test_acc"], metrics["test_loss"] = test["acc"], test["loss"]
        metrics.update(metric_entries(test, "test"))
        matrix = write_score_files(run_dir, test, data.test.labels, data.classes, title="Test split ")
        write_most_confused(run_dir / "most_confused.csv", data.test.labels, test["predictions"], data.classes)
        plot_confusion(matrix.numpy(), data.classes, run_dir / "confusion_matrix.png",
                       title=f"Test confusion matrix (accuracy {test['acc']:.3f}, best epoch {result.best_epoch})")
    if result.history:
        plot_curves(result.history, result.best_epoch, run_dir / "curves.png")
    CLOCK.lap("figures")
    if before_metrics is not None:
        before_metrics()
        CLOCK.lap("checkpoint_wait")
    train_seconds = sum(r["seconds"] for r in result.history)
    metrics.update(extra)
    metrics["train_seconds"] = train_seconds
    # Epoch throughput (training + validation time), counted over every finished epoch.
    metrics["train_images_per_second"] = (len(data.train) * len(result.history) / train_seconds
                                          if train_seconds else None)
    metrics["timing"] = {**CLOCK.take(), **(timing or {})}
    atomic_write_json(run_dir / "metrics.json", metrics)
    if metrics["test_acc"] is not None:
        log.info("Best epoch %d: val_acc %.4f — test_acc %.4f test_loss %.4f (%s)", result.best_epoch,
                 metrics["best_val_acc"], metrics["test_acc"], metrics["test_loss"], run_dir)
    elif best_weights is None:
        log.warning("No epoch finished, so there is no best checkpoint to test (%s).", run_dir)
    return metrics

"""What a run leaves behind after training: test scores of the best checkpoint,
metrics.json, curves.png and confusion_matrix.png."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from facecls.checkpoint import load_checkpoint
from facecls.engine import evaluate
from facecls.io import atomic_write_json

log = logging.getLogger(__name__)


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def finish_run(run_dir: Path, model, net, data, prepare, settings, result, best_weights: dict | None,
               extra: dict) -> dict:
    """Reload the best weights (``best_weights`` or checkpoints/best.pt), score the test split,
    write metrics.json and the figures."""
    from facecls.plots import plot_confusion, plot_curves

    best_path = run_dir / "checkpoints" / "best.pt"
    best_row = next((r for r in result.history if r["epoch"] == result.best_epoch), None)
    metrics = {
        "best_epoch": result.best_epoch or None,
        "best_val_acc": best_row["val_acc"] if best_row else None,
        "best_val_loss": best_row["val_loss"] if best_row else None,
        "best_train_acc": best_row["train_acc"] if best_row else None,
        "best_train_loss": best_row["train_loss"] if best_row else None,
        "test_acc": None,
        "test_loss": None,
        "epochs_run": len(result.history),
        "stop_reason": result.stop_reason,
        "skipped_files": len(data.skipped),
        "skipped": data.skipped,
        "duplicates_across_splits": len(data.duplicates),
        "duplicate_examples": data.duplicates[:10],
        "num_classes": len(data.classes),
        "train_size": len(data.train),
        "val_size": len(data.val),
        "test_size": len(data.test),
    }
    if best_weights is None and best_path.exists():
        best_weights = load_checkpoint(best_path, map_location=settings.device)["model"]
    if best_weights is not None:
        model.load_state_dict(best_weights)
        test = evaluate(net, data.test, prepare, settings, return_predictions=True)
        metrics["test_acc"], metrics["test_loss"] = test["acc"], test["loss"]
        matrix = confusion_matrix(data.test.labels, test["predictions"], len(data.classes))
        plot_confusion(matrix.numpy(), data.classes, run_dir / "confusion_matrix.png",
                       title=f"Test confusion matrix (accuracy {test['acc']:.3f}, best epoch {result.best_epoch})")
    if result.history:
        plot_curves(result.history, result.best_epoch, run_dir / "curves.png")
    train_seconds = sum(r["seconds"] for r in result.history)
    metrics.update(extra)
    metrics["train_seconds"] = train_seconds
    # Epoch throughput (training + validation time), counted over every finished epoch.
    metrics["train_images_per_second"] = (len(data.train) * len(result.history) / train_seconds
                                          if train_seconds else None)
    atomic_write_json(run_dir / "metrics.json", metrics)
    if metrics["test_acc"] is not None:
        log.info("Best epoch %d: val_acc %.4f — test_acc %.4f test_loss %.4f (%s)", result.best_epoch,
                 metrics["best_val_acc"], metrics["test_acc"], metrics["test_loss"], run_dir)
    else:
        log.warning("No epoch finished, so there is no best checkpoint to test (%s).", run_dir)
    return metrics

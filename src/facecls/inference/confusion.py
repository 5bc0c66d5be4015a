"""most_confused.csv: the off-diagonal cells of the confusion matrix as a ranked list of class
pairs (fastai's ``most_confused``) — on a 50-class matrix the few pairs that matter are hard to
find by eye. Written by training (the test split, every run dir) and by `facecls eval`."""
from __future__ import annotations

from pathlib import Path

import torch

from facecls.inference.metrics import confusion_matrix
from facecls.io import atomic_write_text, csv_text

COLUMNS = ["true", "predicted", "count", "share_of_true"]


def most_confused(labels: torch.Tensor, predictions: torch.Tensor, classes: list[str],
                  min_count: int = 1) -> list[tuple[str, str, int, float]]:
    """(true, predicted, count, count ÷ images of the true class) for every confused pair with at
    least ``min_count`` images, most frequent first (ties: by class order)."""
    matrix = confusion_matrix(labels.cpu(), predictions.cpu(), len(classes))
    support = matrix.sum(1)
    pairs = [(int(matrix[t, p]), t, p) for t in range(len(classes)) for p in range(len(classes))
             if t != p and int(matrix[t, p]) >= min_count]
    pairs.sort(key=lambda item: (-item[0], item[1], item[2]))
    return [(classes[t], classes[p], n, n / max(int(support[t]), 1)) for n, t, p in pairs]


def write_most_confused(path: Path, labels: torch.Tensor, predictions: torch.Tensor, classes: list[str]) -> Path:
    """``path`` as most_confused.csv (header only when nothing was confused)."""
    rows = [(t, p, n, f"{share:.6f}") for t, p, n, share in most_confused(labels, predictions, classes)]
    return atomic_write_text(Path(path), csv_text(COLUMNS, rows))

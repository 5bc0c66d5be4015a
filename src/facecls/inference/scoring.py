"""Score a split and write what the score is made of: per_class.csv (precision, recall, F1,
support per class), reliability.png (confidence vs accuracy per bin) and reliability.csv
(its bins and counts). Shared by training's test score (outputs.finish_run) and `facecls eval`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facecls.inference.evaluate import EvalSettings, evaluate
from facecls.inference.metrics import Calibration, calibration, confusion_matrix, per_class, summary_metrics
from facecls.io import atomic_write_text, csv_text
from facecls.plots import plt, save_figure

PER_CLASS_COLUMNS = ["class", "precision", "recall", "f1", "support"]
RELIABILITY_COLUMNS = ["bin", "low", "high", "count", "confidence", "accuracy"]


def score_split(net, split, prepare, settings: EvalSettings, num_classes: int) -> dict:
    """evaluate() with every probability, plus the summary metrics: a dict with loss, acc,
    predictions, confidence, probabilities and the metrics.summary_metrics numbers."""
    result = evaluate(net, split, prepare, settings, return_probabilities=True)
    numbers = summary_metrics(result["probabilities"], split.labels, num_classes)
    numbers.pop("acc")  # evaluate's accuracy is the one metrics.json has always reported
    return {**result, **numbers}


def per_class_rows(matrix: torch.Tensor, classes: list[str]) -> list[list]:
    """The rows of per_class.csv (PER_CLASS_COLUMNS), formatted as written, one per class."""
    stats = per_class(matrix)
    return [[name, f"{p:.6f}", f"{r:.6f}", f"{f:.6f}", int(s)] for name, p, r, f, s in
            zip(classes, stats.precision.tolist(), stats.recall.tolist(), stats.f1.tolist(), stats.support.tolist())]


def per_class_csv(matrix: torch.Tensor, classes: list[str]) -> str:
    return csv_text(PER_CLASS_COLUMNS, per_class_rows(matrix, classes))


def reliability_csv(bins: Calibration) -> str:
    rows = ([i, f"{bins.edges[i]:.6f}", f"{bins.edges[i + 1]:.6f}", int(bins.counts[i]),
             f"{bins.confidence[i]:.6f}", f"{bins.accuracy[i]:.6f}"] for i in range(len(bins.counts)))
    return csv_text(RELIABILITY_COLUMNS, rows)


def draw_reliability(ax, bins: Calibration) -> None:
    """The standard reliability diagram (Guo et al., 2017): for each confidence bin a bar of its
    accuracy and, hatched red, the gap from that accuracy to the bin's mean confidence — above
    the bar when the model is over-confident, inside it when under-confident; the diagonal is
    perfect calibration. Each bin's image count is written on it (an almost empty bin says little)."""
    lows, width = bins.edges[:-1].numpy(), 1.0 / len(bins.counts)
    filled = bins.counts > 0
    low, acc = lows[filled.numpy()], bins.accuracy[filled].numpy()
    conf = bins.confidence[filled].numpy()
    ax.bar(low, acc, width=width, align="edge", color="tab:blue", alpha=0.75, edgecolor="black", linewidth=0.5,
           label="accuracy in bin")
    ax.bar(low, abs(conf - acc), bottom=np.minimum(conf, acc), width=width, align="edge", color="tab:red",
           alpha=0.3, edgecolor="tab:red", hatch="//", linewidth=0.5, label="gap to the bin's mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    for x, top, count in zip(low, np.maximum(conf, acc).tolist(), bins.counts[filled].tolist()):
        ax.text(x + width / 2, min(top + 0.02, 0.97), str(count), ha="center", fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)


def plot_reliability(bins: Calibration, path: Path, title: str) -> Path:
    """reliability.png: :func:`draw_reliability` with a title."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    draw_reliability(ax, bins)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def write_score_files(out: Path, scored: dict, labels: torch.Tensor, classes: list[str], prefix: str = "",
                      title: str = "") -> torch.Tensor:
    """Write ``{prefix}per_class.csv``, ``{prefix}reliability.png`` and ``{prefix}reliability.csv``
    into ``out``; return the confusion matrix."""
    matrix = confusion_matrix(labels, scored["predictions"], len(classes))
    atomic_write_text(out / f"{prefix}per_class.csv", per_class_csv(matrix, classes))
    bins = calibration(scored["confidence"], scored["predictions"] == labels)
    atomic_write_text(out / f"{prefix}reliability.csv", reliability_csv(bins))
    plot_reliability(bins, out / f"{prefix}reliability.png",
                     f"{title}reliability (ECE {bins.ece:.3f}, {int(bins.counts.sum())} images)")
    return matrix


def metric_entries(scored: dict, prefix: str) -> dict:
    """The summary numbers of a scored split under metrics.json / eval.json names."""
    keys = [k for k in scored if k in ("macro_f1", "weighted_f1", "balanced_acc", "ece", "nll") or k.startswith("top")]
    return {f"{prefix}_{k}": scored[k] for k in keys}

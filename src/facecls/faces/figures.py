"""Verification figures: the ROC curve on a log-FAR axis (``roc.png``) and the same- vs
different-person similarity histograms (``similarities.png``).

Why a log-FAR axis: face systems run at FAR 1e-3 and below, where a linear axis squeezes the
whole useful part of the curve against x = 0. Files are written atomically through
:func:`facecls.plots.save_figure`, like every other figure of a run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from facecls.plots import save_figure  # noqa: E402


def _positive_far(far: Any, tar: Any) -> tuple[np.ndarray, np.ndarray]:
    """ROC points a log axis can show: FAR = 0 has no place on it, so those points are dropped
    (the curve starts at the smallest measurable FAR, 1 / number of different-person pairs)."""
    far, tar = np.asarray(far, dtype=float), np.asarray(tar, dtype=float)
    keep = far > 0
    return far[keep], tar[keep]


def roc_overlay(curves: Mapping[str, tuple[Any, Any]], path: str | Path, title: str = "ROC") -> Path:
    """Several ROC curves (label → (far, tar)) on one log-FAR axis, e.g. one per loss."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    lowest = 1.0
    for label, (far, tar) in curves.items():
        x, y = _positive_far(far, tar)
        if len(x):
            lowest = min(lowest, float(x.min()))
            ax.plot(x, y, label=label, drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_xlim(lowest, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate (different people accepted)")
    ax.set_ylabel("true accept rate (same person accepted)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if any(curves):
        ax.legend(loc="lower right")
    return save_figure(fig, Path(path))


def roc_figure(far: Any, tar: Any, path: str | Path, *, label: str = "model", title: str = "ROC") -> Path:
    """One ROC curve (arrays from :func:`facecls.faces.verification.roc`) on a log-FAR axis."""
    return roc_overlay({label: (far, tar)}, path, title=title)


def similarity_histogram(scores: Any, same: Any, threshold: float | None, path: str | Path,
                         title: str = "Pair similarities") -> Path:
    """Histograms of same-person and different-person similarities, on shared bins, with the
    decision threshold marked: how far apart the two piles are is what the numbers summarise."""
    scores = np.asarray(scores, dtype=float).reshape(-1)
    same = np.asarray(same, dtype=bool).reshape(-1)
    low, high = (float(scores.min()), float(scores.max())) if len(scores) else (-1.0, 1.0)
    bins = np.linspace(low, high if high > low else low + 1e-6, 41)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(scores[same], bins=bins, alpha=0.6, label=f"same person ({int(same.sum())})", color="tab:green")
    ax.hist(scores[~same], bins=bins, alpha=0.6, label=f"different people ({int((~same).sum())})", color="tab:red")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, Path(path))

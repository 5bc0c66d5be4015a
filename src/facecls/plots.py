"""Per-run figures: accuracy/loss histories (the report's Figs. 2, 4, 7, 10) and the test
confusion matrix. Matplotlib with the Agg backend: files only, no display needed."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    from facecls.io import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_curves(history: list[dict], best_epoch: int, path: Path, title: str = "") -> Path:
    """Accuracy history and loss history, train vs val, best epoch marked."""
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    marker = "." if len(epochs) < 30 else None
    for ax, metric, name in ((axes[0], "acc", "Accuracy"), (axes[1], "loss", "Loss")):
        ax.plot(epochs, [r[f"train_{metric}"] for r in history], label="train", marker=marker)
        ax.plot(epochs, [r[f"val_{metric}"] for r in history], label="validation", marker=marker)
        if best_epoch:
            ax.axvline(best_epoch, color="gray", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name.lower())
        ax.set_title(f"{name} history")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion(matrix, classes: list[str], path: Path, title: str = "Test confusion matrix") -> Path:
    """Counts with true classes on rows and predicted classes on columns."""
    n = len(classes)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    high = matrix.max() if matrix.size else 0
    if n <= 30:
        for i in range(n):
            for j in range(n):
                value = int(matrix[i, j])
                if value:
                    ax.text(j, i, value, ha="center", va="center", fontsize=7,
                            color="white" if value > high / 2 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return save_figure(fig, path)

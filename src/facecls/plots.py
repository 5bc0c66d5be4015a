"""Per-run figures: accuracy/loss histories (the report's Figs. 2, 4, 7, 10) and the test
confusion matrix. Matplotlib with the Agg backend: files only, no display needed."""
from __future__ import annotations

from pathlib import Path

import matplotlib

from facecls.io import atomic_write

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager  # noqa: E402

# Class names come from folder names, in any script: each glyph is drawn with the first of
# these fonts that has it (matplotlib's per-glyph fallback), among those this machine has.
FONT_FALLBACK = ("DejaVu Sans", "Noto Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "WenQuanYi Zen Hei",
                 "Noto Sans Arabic", "Noto Sans Devanagari", "Noto Sans Hebrew", "Noto Sans Thai")
_installed = {font.name for font in font_manager.fontManager.ttflist}
plt.rcParams["font.family"] = [f for f in FONT_FALLBACK if f in _installed] or plt.rcParams["font.family"]
# Every label is literal text: a class folder named `$\foo$` would otherwise be parsed as
# mathtext and fail the figure (after training, losing the run's results).
plt.rcParams["text.parse_math"] = False
plt.rcParams["text.usetex"] = False


def display_name(name: str) -> str:
    """A name as figures show it: bytes of another encoding as \\xNN-style escapes."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def save_figure(fig, path: Path) -> Path:

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
    names = [display_name(c) for c in classes]
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
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

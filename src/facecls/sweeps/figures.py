"""Sweep figures: accuracy per configuration with error bars (summary.png) and every
configuration's validation-accuracy history on one axis (curves_overlay.png)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from facecls.plots import plt, save_figure
from facecls.sweeps.table import Group, Summary


def _seed_note(summary: Summary) -> str:
    over = ", ".join(summary.averaged_over) or "repeats"
    return f"mean and 95% t-interval over {over}; dots = single runs"


def plot_summary(summary: Summary, path: Path) -> Path:
    """Horizontal bars per configuration: best validation and test accuracy (mean), the 95%
    t-interval of the mean as error bars (none with a single run) and each finished run as a dot."""
    groups = summary.groups
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.55 * len(groups)), layout="constrained")
    y = np.arange(len(groups))
    height = 0.38
    for offset, metric, name, color in ((-height / 2, "best_val_acc", "best val acc", "tab:blue"),
                                        (height / 2, "test_acc", "test acc", "tab:orange")):
        stats = [g.stat(metric) for g in groups]
        means = [s.mean if s.mean is not None else 0.0 for s in stats]
        # [below, above] extents of each interval from its mean (0 where there is none: n < 2)
        errors = [[s.mean - s.ci[0] if s.ci else 0.0 for s in stats],
                  [s.ci[1] - s.mean if s.ci else 0.0 for s in stats]]
        ax.barh(y + offset, means, height, xerr=errors, color=color, alpha=0.75, label=name,
                error_kw={"capsize": 3, "elinewidth": 1})
        for i, g in enumerate(groups):
            values = [r.metric(metric) for r in g.finished]
            values = [v for v in values if v is not None and math.isfinite(v)]
            ax.scatter(values, [i + offset] * len(values), s=10, color="black", zorder=3)
            if stats[i].mean is not None:
                ax.text(min(stats[i].mean + errors[1][i] + 0.01, 0.93), i + offset, f"{stats[i].mean:.3f}",
                        va="center", fontsize=7)
    ax.set_yticks(y, [_label(g) for g in groups], fontsize=8)
    ax.invert_yaxis()  # first configuration on top, as in the table
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("accuracy")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    ax.set_title(f"{len(summary.runs)} runs, {len(groups)} configurations ({_seed_note(summary)})", fontsize=9)
    return save_figure(fig, path)


def _label(group: Group) -> str:
    label = group.label
    if not group.finished:
        label += f"\n({group.problems or 'no result'})"
    elif group.problems:
        label += f"\n({group.problems})"
    return label


def plot_curves_overlay(summary: Summary, path: Path) -> Path:
    """Validation accuracy per epoch of every configuration: the mean over its runs as a
    line, the spread (±std) as a band when it has several runs."""
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab10" if len(summary.groups) <= 10 else "tab20")
    drawn = 0
    for i, g in enumerate(summary.groups):
        histories = [r.history for r in g.runs if r.history]
        if not histories:
            continue
        by_epoch: dict[int, list[float]] = {}
        for history in histories:
            for row in history:
                if "val_acc" in row:
                    by_epoch.setdefault(int(row["epoch"]), []).append(row["val_acc"])
        epochs = sorted(by_epoch)
        means = np.array([np.mean(by_epoch[e]) for e in epochs])
        stds = np.array([np.std(by_epoch[e], ddof=1) if len(by_epoch[e]) > 1 else 0.0 for e in epochs])
        color = colors(i % colors.N)
        ax.plot(epochs, means, color=color, label=g.label, linewidth=1.5,
                marker="o" if len(epochs) <= 30 else None, markersize=3)
        if len(histories) > 1:
            ax.fill_between(epochs, means - stds, means + stds, color=color, alpha=0.15, linewidth=0)
        drawn += 1
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.set_title(f"Validation accuracy of {drawn} configurations (mean over runs, band = ±std)", fontsize=9)
    if drawn:
        ax.legend(fontsize=7, loc="lower right" if drawn <= 12 else "upper left",
                  bbox_to_anchor=None if drawn <= 12 else (1.01, 1.0))
    return save_figure(fig, path)

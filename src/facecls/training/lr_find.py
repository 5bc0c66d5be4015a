"""The learning-rate range test (Smith 2015, "Cyclical learning rates"; fastai's ``lr_find``):
train the run's own model for ~100 steps while the learning rate grows exponentially from
``start_lr`` to ``end_lr``, record the smoothed loss, stop when it explodes, and suggest a
learning rate — where the loss falls fastest (steepest, the default ``optim.lr=…`` printed) and
fastai's ``valley`` (half way down the longest stretch of falling loss; more cautious).

The run is assembled by :func:`facecls.training.run.build_run` from the same config `facecls
train` would use, so every model works as it trains — a frozen-feature model steps its head on
the cached features, a fine-tuned one keeps its per-group LR ratios (each group is scaled by the
same factor). Nothing is kept: no checkpoint, only lr_find.png/.csv/.json in its own folder.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.ticker import FuncFormatter, NullFormatter
from torch import nn

from facecls.data.batches import iterate_batches
from facecls.errors import UserError
from facecls.io import atomic_write_json, atomic_write_text, csv_text
from facecls.plots import plt, save_figure
from facecls.training.run import TrainingRun

log = logging.getLogger(__name__)


@dataclass
class RangeTest:
    """What the sweep recorded, and the suggestions read from it."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)    # raw, per step
    smoothed: list[float] = field(default_factory=list)  # debiased exponential moving average
    stopped: str = "end_lr reached"
    steepest: float | None = None
    valley: float | None = None


def lr_schedule(start_lr: float, end_lr: float, num_steps: int) -> list[float]:
    """``num_steps`` learning rates from start_lr to end_lr, evenly spaced on a log axis."""
    if not (0 < start_lr < end_lr) or num_steps < 2:
        raise UserError(f"lr_find needs 0 < start_lr < end_lr and num_steps >= 2 (got {start_lr}, {end_lr}, "
                        f"{num_steps}) — e.g. lr_find.start_lr=1e-7 lr_find.end_lr=10 lr_find.num_steps=100.")
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / (num_steps - 1)) for i in range(num_steps)]


def steepest(lrs: list[float], smoothed: list[float]) -> float | None:
    """The LR where the smoothed loss falls fastest per decade (most negative d loss / d log lr)."""
    if len(smoothed) < 3:
        return None
    slope = np.gradient(np.asarray(smoothed), np.log10(np.asarray(lrs)))
    return float(lrs[int(np.argmin(slope))])


def valley(lrs: list[float], smoothed: list[float]) -> float | None:
    """fastai's ``valley``: the longest run of decreasing loss (longest decreasing subsequence
    ending latest), and the LR half way down it (start + 1/3 + 1/6 of its length, as fastai)."""
    n = len(smoothed)
    if n < 3:
        return None
    longest, max_start, max_end = [1] * n, 0, 0
    for i in range(1, n):
        for j in range(i):
            if smoothed[i] < smoothed[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[max_end] < longest[i]:
            max_end, max_start = i, i - longest[i]
    third = (max_end - max_start) / 3
    return float(lrs[min(n - 1, max_start + int(third) + int(third / 2))])


def range_test(run: TrainingRun, start_lr: float, end_lr: float, num_steps: int, smooth: float = 0.98,
               diverge: float = 4.0) -> RangeTest:
    """Step ``run.trained`` through the exponential LR sweep (cycling over the shuffled training
    batches); stop early once the smoothed loss exceeds ``diverge`` × its lowest value or is not finite."""
    settings, net, optimizer = run.settings, run.trained, run.optimizer
    base = optimizer.param_groups[0]["lr"] or 1.0
    ratios = [g["lr"] / base for g in optimizer.param_groups]  # fine-tuning's per-group ratios stay
    criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    generator = torch.Generator().manual_seed(settings.seed)
    result, average, best = RangeTest(), 0.0, math.inf
    batches = iter(())
    net.train()
    for step, lr in enumerate(lr_schedule(start_lr, end_lr, num_steps)):
        try:
            x, y = next(batches)
        except StopIteration:  # a small training set: start another shuffled pass
            batches = iterate_batches(run.data.train, settings.batch_size, shuffle=True, generator=generator)
            x, y = next(batches)
        for group, ratio in zip(optimizer.param_groups, ratios):
            group["lr"] = lr * ratio
        x, y = run.prepare(x, train=True), y.to(settings.device, non_blocking=True)
        target = y
        if settings.mixer is not None:
            x, target = settings.mixer(x, y)
        with settings.autocast():
            logits = net(x, y) if settings.loss_head else net(x)
        loss = criterion(logits.float(), target)
        value = loss.detach().item()  # one sync per step: ~100 steps, and the early stop needs the value
        average = smooth * average + (1 - smooth) * value
        smoothed = average / (1 - smooth ** (step + 1))
        result.lrs.append(lr)
        result.losses.append(value)
        result.smoothed.append(smoothed)
        if not math.isfinite(smoothed) or smoothed > diverge * best:
            result.stopped = f"loss exploded at lr {lr:.2e} (step {step + 1})"
            break
        if best < 0.9 * result.smoothed[0] and smoothed > result.smoothed[0]:
            # a BatchNorm network often does not blow up but falls back to chance: as good a stop
            result.stopped = f"loss back above its start at lr {lr:.2e} (step {step + 1})"
            break
        best = min(best, smoothed)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    # the suggestions ignore the exploding tail: up to the lowest smoothed loss's LR × 4 at most
    usable = _until_explosion(result)
    result.steepest = steepest(result.lrs[:usable], result.smoothed[:usable])
    result.valley = valley(result.lrs[:usable], result.smoothed[:usable])
    return result


def _until_explosion(result: RangeTest) -> int:
    """How many leading points the suggestions read: those before the loss has climbed past its
    minimum and kept climbing (the explosion the stop rule caught)."""
    values = [v if math.isfinite(v) else math.inf for v in result.smoothed]
    lowest = int(np.argmin(values)) if values else 0
    end = lowest + 1
    while end < len(values) and values[end] <= 1.5 * values[lowest]:
        end += 1
    return end


def plot_range_test(result: RangeTest, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(result.lrs, result.losses, color="tab:gray", alpha=0.35, linewidth=0.8, label="loss per step")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", label="smoothed loss")
    for value, name, colour in ((result.valley, "valley", "tab:red"), (result.steepest, "steepest", "tab:orange")):
        if value is not None:
            ax.axvline(value, color=colour, linestyle="--", label=f"{name} {value:.1e}")
    ax.set_xscale("log")
    # plain "1e-03" labels (the figures' style turns mathtext off, which would print $\mathdefault…$)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.95, min(max(finite), 2.5 * finite[0]) * 1.05)
    ax.set_xlabel("learning rate (log)")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR range test: {len(result.lrs)} steps, {result.stopped}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_range_test(result: RangeTest, out: Path, suggest: str = "steepest") -> dict:
    """lr_find.csv (lr, loss, smoothed), lr_find.png and lr_find.json (the suggestions; ``suggest``
    names the one printed as the override: steepest or valley)."""
    rows = ([f"{lr:.6e}", f"{loss:.6f}", f"{s:.6f}"] for lr, loss, s in
            zip(result.lrs, result.losses, result.smoothed))
    atomic_write_text(out / "lr_find.csv", csv_text(["lr", "loss", "smoothed_loss"], rows))
    plot_range_test(result, out / "lr_find.png")
    summary = {"steps": len(result.lrs), "stopped": result.stopped, "valley": result.valley,
               "steepest": result.steepest,
               "suggested": getattr(result, suggest) or result.valley or result.steepest, "suggest": suggest}
    atomic_write_json(out / "lr_find.json", summary)
    return summary

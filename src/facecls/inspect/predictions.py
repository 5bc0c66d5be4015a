"""A gallery of correct and false predictions
(report section 2.4, Figs. 8 and 9) — each image with its true name, the predicted name
and the model's confidence. The images are drawn at random with a fixed seed (the same
command shows the same images), or named with ``image=``. ``order=loss`` shows the top losses
instead: the images the model is most wrong about (true class, predicted class and probability, loss)."""
from __future__ import annotations

import logging

import torch

from facecls.config.checks import check_split
from facecls.errors import UserError
from facecls.inference.evaluate import evaluate
from facecls.inspect.images import Picked, class_name, pick_images, predict, to_picture
from facecls.io import atomic_write_text, csv_text
from facecls.plots import plt, save_figure

log = logging.getLogger(__name__)

CSV_COLUMNS = ["row", "index", "file", "true", "predicted", "confidence", "correct"]
TOP_LOSS_COLUMNS = ["rank", "index", "file", "true", "predicted", "probability", "true_probability", "loss"]


def sample_indices(correct: torch.Tensor, count: int, seed: int) -> tuple[list[int], list[int]]:
    """Up to ``count`` correct and ``count`` false indices, drawn reproducibly from ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    chosen = []
    for mask in (correct, ~correct):
        pool = mask.nonzero().flatten()
        order = torch.randperm(len(pool), generator=generator)[:count]
        chosen.append(sorted(pool[order].tolist()))
    return chosen[0], chosen[1]


def gallery(rows: list[tuple[str, list[dict]]], classes: list[str]):
    """One row of panels per (heading, entries); each entry: picture, true, predicted, confidence."""
    cols = max(1, max(len(entries) for _, entries in rows))
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.3 * cols, 2.7 * len(rows)), squeeze=False)
    for r, (heading, entries) in enumerate(rows):
        for ax in axes[r]:
            ax.axis("off")
        if not entries:
            axes[r][0].text(0, 0.5, f"{heading}: none", fontsize=10, transform=axes[r][0].transAxes)
            continue
        for ax, e in zip(axes[r], entries):
            ax.imshow(e["picture"], interpolation="nearest")
            right = e["true"] is not None and e["true"] == e["predicted"]
            colour = "green" if right else ("red" if e["true"] is not None else "black")
            loss = f" · loss {e['loss']:.2f}" if e.get("loss") is not None else ""
            ax.set_title(f"true: {class_name(classes, e['true'])}\npredicted: {classes[e['predicted']]}\n"
                         f"confidence {e['confidence']:.2f}{loss}", fontsize=8, color=colour)
        axes[r][0].text(-0.08, 0.5, heading, rotation=90, va="center", ha="right", fontsize=10,
                        transform=axes[r][0].transAxes)
    return fig


def _entries(picked: list[Picked], predicted: torch.Tensor, confidence: torch.Tensor) -> list[dict]:
    return [{"picture": to_picture(p.pixels), "true": p.label, "predicted": int(predicted[k]),
             "confidence": float(confidence[k]), "file": p.name, "index": p.index} for k, p in enumerate(picked)]


def prediction_gallery(run, split_name: str, count: int, seed: int, image=None, batch_size: int = 256):
    """Build the gallery figure and its rows (for the CSV)."""
    check_split(split_name)
    if image is not None:
        picked = pick_images(image, run, split_name)
        predicted, confidence = predict(run.model, run.prepare, torch.stack([p.pixels for p in picked]))
        rows = [("chosen images", _entries(picked, predicted, confidence))]
    else:
        if not isinstance(count, int) or count < 1:
            raise UserError(f"count={count} is invalid — give a whole number >= 1 (images per row).")
        split = run.data.split(split_name)
        result = evaluate(run.model, split, run.prepare, run.eval_settings(batch_size), return_predictions=True)
        correct = result["predictions"] == split.labels
        rows = []
        for heading, indices in zip(("correct", "false"), sample_indices(correct, count, seed)):
            picked = pick_images(indices, run, split_name) if indices else []
            rows.append((heading, _entries(picked, result["predictions"][indices], result["confidence"][indices])))
        log.info("%s split: %d of %d predictions correct (accuracy %.4f)", split_name, int(correct.sum()),
                 len(split), result["acc"])
    return gallery(rows, run.classes), rows


def rows_csv(rows, classes: list[str]) -> str:
    def cells(heading: str, e: dict) -> list:
        correct = "" if e["true"] is None else int(e["true"] == e["predicted"])
        return [heading, "" if e["index"] is None else e["index"], e["file"], class_name(classes, e["true"]),
                classes[e["predicted"]], f"{e['confidence']:.6f}", correct]

    return csv_text(CSV_COLUMNS, (cells(heading, e) for heading, entries in rows for e in entries))


def top_losses(run, split_name: str, count: int, batch_size: int = 256) -> list[dict]:
    """The ``count`` images of the split the model is most wrong about (fastai's plot_top_losses):
    highest cross-entropy of the true class first, each with its true and predicted class, the
    predicted class's probability, the true class's probability and the loss."""
    check_split(split_name)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"count={count} is invalid — give a whole number >= 1 (images per row).")
    split = run.data.split(split_name)
    result = evaluate(run.model, split, run.prepare, run.eval_settings(batch_size), return_probabilities=True)
    p_true = result["probabilities"].gather(1, split.labels.view(-1, 1).long()).flatten()
    losses = -p_true.clamp_min(torch.finfo(p_true.dtype).tiny).log()
    order = torch.argsort(losses, descending=True, stable=True)[:count].tolist()
    picked = pick_images(order, run, split_name) if order else []
    entries = _entries(picked, result["predictions"][order], result["confidence"][order])
    for e, k in zip(entries, order):
        e.update(loss=float(losses[k]), true_probability=float(p_true[k]))
    return entries


def write_top_losses(cfg, run, out) -> dict:
    """`visualize predictions order=loss`: top_losses.png (rows of ``count``) and top_losses.csv."""
    entries = top_losses(run, cfg.split, 2 * cfg.count, cfg.trainer.eval_batch_size)
    rows = [(f"top losses {i + 1}–{min(i + cfg.count, len(entries))}", entries[i:i + cfg.count])
            for i in range(0, len(entries), cfg.count)] or [("top losses", [])]
    png = save_figure(gallery(rows, run.classes), out / "top_losses.png")
    table = atomic_write_text(out / "top_losses.csv", csv_text(
        TOP_LOSS_COLUMNS, ([rank, e["index"], e["file"], class_name(run.classes, e["true"]),
                            run.classes[e["predicted"]], f"{e['confidence']:.6f}", f"{e['true_probability']:.6f}",
                            f"{e['loss']:.6f}"] for rank, e in enumerate(entries, 1))))
    log.info("%d top losses of the %s split (highest %.3f) → %s, %s", len(entries), cfg.split,
             entries[0]["loss"] if entries else float("nan"), png, table)
    return {"top_losses": [{k: e[k] for k in ("index", "file", "true", "predicted", "loss")} for e in entries]}


def run_predictions(cfg, run, out) -> dict:
    """`facecls visualize predictions`: write predictions.png and predictions.csv (order=random), or
    top_losses.png and top_losses.csv (order=loss)."""
    order = cfg.get("order", "random")
    if order not in ("random", "loss"):
        raise UserError(f"order={order} is invalid — use random (a gallery of correct and false predictions) "
                        "or loss (the top losses).")
    if order == "loss":
        return write_top_losses(cfg, run, out)
    fig, rows = prediction_gallery(run, cfg.split, cfg.count, cfg.seed, cfg.image, cfg.trainer.eval_batch_size)
    png = save_figure(fig, out / "predictions.png")
    table = atomic_write_text(out / "predictions.csv", rows_csv(rows, run.classes))
    counts = ", ".join(f"{len(entries)} {heading}" for heading, entries in rows)
    for heading, entries in rows:
        if cfg.image is None and len(entries) < cfg.count:
            log.info("only %d %s prediction(s) in the %s split", len(entries), heading, cfg.split)
    log.info("gallery of %s → %s, %s", counts, png, table)
    return {"rows": {heading: len(entries) for heading, entries in rows}}

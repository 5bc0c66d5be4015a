"""`facecls suspects SWEEP_DIR`: images whose label is likely wrong, from the out-of-fold
probabilities of a k-fold sweep (confident learning, Northcutt et al. 2021; cleanlab's
``find_label_issues``).

Every image of the folder gets out-of-sample probabilities exactly once: an image of the
train+val pool from the one fold model that held it out (it was that model's validation split),
an image of the fixed test split as the mean over the K fold models (none trained on it).

Each class j gets a threshold t_j = the mean probability of class j over the images labelled j
(its average self-confidence). An image labelled y is a suspect when p_y < t_y and some other
class k has p_k >= t_k; the suggested label is the k with the largest p_k − t_k. Suspects are
ranked by p_y, lowest first (cleanlab's self-confidence ranking).
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from facecls.data.decode import decode_images
from facecls.errors import UserError
from facecls.inference.evaluate import evaluate
from facecls.inference.loading import load_run
from facecls.io import atomic_write_json, atomic_write_text, csv_text
from facecls.plots import plt, save_figure
from facecls.sweeps.runs import find_run_dirs, read_run

log = logging.getLogger(__name__)

COLUMNS = ["rank", "file", "given", "suggested", "p_given", "p_suggested", "threshold_given", "scored_by"]


@dataclass
class OutOfFold:
    """One out-of-sample probability vector per image of the folder."""

    files: list[str]
    labels: torch.Tensor          # given labels
    probabilities: torch.Tensor   # N×C
    scored_by: list[str]          # "fold i" or "test: mean of K folds"
    classes: list[str]
    root: Path
    preprocess: object
    configuration: str


def fold_groups(sweep_dir: Path) -> dict[str, dict[int, Path]]:
    """The sweep's finished k-fold runs grouped by configuration (every override but the fold and
    the seed): {configuration: {fold: best.pt}}."""
    groups: dict[str, dict[int, Path]] = defaultdict(dict)
    for path in find_run_dirs([sweep_dir]):
        record = read_run(path, sweep_finished=True)
        ckpt = path / "checkpoints" / "best.pt"
        folds, fold = record.setting("data.split.folds"), record.setting("data.split.fold")
        if not record.finished or not ckpt.is_file() or folds is None:
            continue
        key = " ".join(f"{k}={v}" for k, v in sorted(record.overrides.items())
                       if k not in ("data.split.fold", "seed")) or "(defaults)"
        if int(fold) in groups[f"{key} [{int(folds)} folds]"]:
            raise UserError(f"two finished runs of fold {fold} with the same configuration under {sweep_dir} — "
                            "point suspects at one sweep dir (one run per fold).")
        groups[f"{key} [{int(folds)} folds]"][int(fold)] = ckpt
    return groups


def complete_group(sweep_dir: Path) -> tuple[str, dict[int, Path]]:
    """The configuration whose every fold finished (the best by mean test_acc when several did)."""
    groups = fold_groups(sweep_dir)
    complete = {k: v for k, v in groups.items() if len(v) == int(k.rsplit("[", 1)[1].split()[0])}
    if not complete:
        found = "; ".join(f"{k}: folds {sorted(v)}" for k, v in groups.items()) or "no finished k-fold run"
        raise UserError(f"no configuration under {sweep_dir} has a finished run for every fold ({found}) — "
                        "run the folds first: facecls train experiment=compare/kfold5.")
    if len(complete) > 1:
        def mean_test(item):
            scores = [read_run(p.parent.parent).metric("test_acc") or 0.0 for p in item[1].values()]
            return sum(scores) / len(scores)
        name, chosen = max(complete.items(), key=mean_test)
        log.info("%d configurations ran every fold; using the best by mean test_acc: %s", len(complete), name)
        return name, chosen
    return next(iter(complete.items()))


def out_of_fold(sweep_dir: Path, device: str = "auto", batch_size: int | None = None,
                cache_dir: str | None = None) -> OutOfFold:
    """Score each fold's held-out images with that fold's best checkpoint, and the test split
    with every fold's (averaged). A file scored twice by fold models is refused (not a k-fold sweep)."""
    name, ckpts = complete_group(Path(sweep_dir))
    scores: dict[str, tuple[int, torch.Tensor, str]] = {}
    test_sum, test_files, test_labels, first = None, None, None, None
    for fold, ckpt in sorted(ckpts.items()):
        run = load_run(ckpt, device, None, cache_dir)
        first = first or run
        if run.classes != first.classes:
            raise UserError(f"the fold runs of {sweep_dir} have different classes — they must share one data folder.")
        settings = run.eval_settings(batch_size)
        val, test = run.data.split("val"), run.data.split("test")
        probs = evaluate(run.model, val, run.prepare, settings, return_probabilities=True)["probabilities"]
        for file, label, p in zip(val.files, val.labels.tolist(), probs):
            if file in scores:
                raise UserError(f"{file} is in the validation split of two folds — these runs are not the folds "
                                "of one k-fold split (data.split.folds=K, data.split.fold=0…K-1).")
            scores[file] = (label, p, f"fold {fold}")
        test_probs = evaluate(run.model, test, run.prepare, settings, return_probabilities=True)["probabilities"]
        test_sum = test_probs if test_sum is None else test_sum + test_probs
        test_files, test_labels = test.files, test.labels.tolist()
    for file, label, p in zip(test_files, test_labels, test_sum / len(ckpts)):
        scores[file] = (label, p, f"test: mean of {len(ckpts)} folds")
    files = sorted(scores)
    return OutOfFold(files, torch.tensor([scores[f][0] for f in files]),
                     torch.stack([scores[f][1] for f in files]).float(), [scores[f][2] for f in files],
                     list(first.classes), Path(first.data.root), first.data.preprocess, name)


def class_thresholds(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """t_j: the mean probability of class j over the images labelled j (NaN for a class no image has)."""
    classes = probabilities.shape[1]
    sums = torch.zeros(classes).index_add_(0, labels, probabilities[torch.arange(len(labels)), labels])
    counts = torch.bincount(labels, minlength=classes).float()
    return sums / counts


def find_suspects(probabilities: torch.Tensor, labels: torch.Tensor) -> list[tuple[int, int]]:
    """(image index, suggested class) of every suspect, ranked by the given label's probability (lowest first)."""
    thresholds = class_thresholds(probabilities, labels)
    rows = torch.arange(len(labels))
    p_given = probabilities[rows, labels]
    above = probabilities >= thresholds.nan_to_num(math.inf)  # a class nobody has cannot be suggested
    above[rows, labels] = False
    suspect = (p_given < thresholds[labels]) & above.any(1)
    margin = (probabilities - thresholds.nan_to_num(math.inf)).masked_fill(~above, -math.inf)
    suggested = margin.argmax(1)
    order = sorted(suspect.nonzero().flatten().tolist(), key=lambda i: (float(p_given[i]), i))
    return [(i, int(suggested[i])) for i in order]


def contact_sheet(oof: OutOfFold, found: list[tuple[int, int]], path: Path, count: int, columns: int = 6) -> Path:
    """The first ``count`` suspects: each image titled given → suggested with both probabilities."""
    shown = found[:count]
    rows = max(1, math.ceil(len(shown) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if shown:
        pixels, keep, _ = decode_images(oof.root, [oof.files[i] for i, _ in shown], oof.preprocess, cache_dir=None,
                                        progress=False)
        readable = [s for s, k in zip(shown, keep.tolist()) if k]
        for ax, (i, k), image in zip(axes.flat, readable, pixels):
            ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(f"{Path(oof.files[i]).name[:22]}\ngiven {oof.classes[int(oof.labels[i])]} "
                         f"({float(oof.probabilities[i, oof.labels[i]]):.2f})\nsuggest {oof.classes[k]} "
                         f"({float(oof.probabilities[i, k]):.2f})", fontsize=7, color="darkred")
    else:
        axes.flat[0].text(0, 0.5, "no suspects", fontsize=12)
    fig.suptitle(f"likely mislabelled (out-of-fold, confident learning): {len(found)} of {len(oof.files)} images")
    return save_figure(fig, path)


def write_suspects(sweep_dir: Path, out: Path, device: str = "auto", batch_size: int | None = None,
                   count: int = 24, cache_dir: str | None = None) -> dict:
    """suspects.csv (ranked), suspects.png (contact sheet) and suspects.json into ``out``."""
    oof = out_of_fold(sweep_dir, device, batch_size, cache_dir)
    found = find_suspects(oof.probabilities, oof.labels)
    thresholds = class_thresholds(oof.probabilities, oof.labels)
    out.mkdir(parents=True, exist_ok=True)
    rows = [[rank, oof.files[i], oof.classes[int(oof.labels[i])], oof.classes[k],
             f"{float(oof.probabilities[i, oof.labels[i]]):.6f}", f"{float(oof.probabilities[i, k]):.6f}",
             f"{float(thresholds[oof.labels[i]]):.6f}", oof.scored_by[i]] for rank, (i, k) in enumerate(found, 1)]
    atomic_write_text(out / "suspects.csv", csv_text(COLUMNS, rows))
    contact_sheet(oof, found, out / "suspects.png", count)
    summary = {"sweep_dir": str(Path(sweep_dir).resolve()), "configuration": oof.configuration,
               "images": len(oof.files), "suspects": len(found),
               "thresholds": {c: (None if math.isnan(t) else round(t, 6))
                              for c, t in zip(oof.classes, thresholds.tolist())},
               "files": [r[1] for r in rows]}
    atomic_write_json(out / "suspects.json", summary)
    return summary  # the command prints the one summary line

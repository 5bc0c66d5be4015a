"""A pairs.txt over held-out people of an LFW-layout tree (`facecls make-data synthetic layout=lfw`),
so the whole verification protocol runs offline on a fresh machine.

"Held out" means the people a ``data.split.by=identity`` run with the same split ratios and
seed puts into its test split (:func:`facecls.data.split.assign_identity_splits`): a model trained
on that tree never sees them, and ``facecls verify pairs=<tree>/pairs.txt`` then measures
recognition of unseen people. ``people="all"`` uses everyone (to score a model trained elsewhere).
"""
from __future__ import annotations

import logging
from pathlib import Path

from facecls.data.split import assign_identity_splits
from facecls.errors import UserError
from facecls.faces.pairs import IMAGE_EXTENSIONS, Pair, draw_pairs, write_pairs

log = logging.getLogger(__name__)

PER_FOLD_STEPS = (300, 200, 100, 50, 30, 20, 10, 5, 3, 2, 1)  # per_fold=auto: the largest of these that fits


def people_files(root: Path) -> dict[str, list[str]]:
    """Person folder name → its image files."""
    return {d.name: sorted(str(f) for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
            for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def draw_fitting(files: dict[str, list[str]], folds: int, per_fold, seed: int) -> tuple[list[Pair], int]:
    """``draw_pairs`` with ``per_fold`` pairs of each kind per fold, or with ``per_fold="auto"`` the
    largest of PER_FOLD_STEPS that the people allow (the error of the smallest when none does)."""
    if per_fold != "auto":
        return draw_pairs(files, folds=folds, pairs_per_fold=int(per_fold), seed=seed), int(per_fold)
    for step in PER_FOLD_STEPS:
        try:
            return draw_pairs(files, folds=folds, pairs_per_fold=step, seed=seed), step
        except UserError:
            if step == PER_FOLD_STEPS[-1]:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def test_people(names: list[str], split) -> list[str]:
    """The people a ``data.split.by=identity`` run with these ratios and seed puts in its test split."""
    where = assign_identity_splits(names, list(range(len(names))), names, split.train, split.val, split.test,
                                   seed=split.seed)
    return [n for n, s in zip(names, where) if s == "test"]


def write_heldout_pairs(root: Path, people: str, split, folds: int, per_fold, seed: int) -> tuple[Path, int, int]:
    """Write ``root/pairs.txt`` over the held-out people (``people="test"``: those ``split`` —
    data.split's train/val/test/seed — holds out) or over everyone (``people="all"``).
    Returns (file, people used, pairs per fold)."""
    files = people_files(root)
    if people == "test":
        held_out = set(test_people(list(files), split))
        files = {name: paths for name, paths in files.items() if name in held_out}
    elif people != "all":
        raise UserError(f"pairs.people={people} — use test (the people a data.split.by=identity run holds out) "
                        "or all.")
    pairs, step = draw_fitting(files, folds, per_fold, seed)
    path = write_pairs(root / "pairs.txt", pairs, folds, step)
    return path, len(files), step

"""Train/val/test assignment by a stable hash of each file's relative path.

Each file's split depends only on its own path and the split seed, so adding images to a
class never moves an existing image to another split (no leakage between runs of a growing
dataset), and the same folder always gives the same split on any machine.

K-fold cross-validation (``data.split.folds=K``, ``data.split.fold=i``) keeps the test split
as it is and hands every other image one of K folds by a second, independent hash of its
path: fold i is the validation split, the rest train. The K validation sets are disjoint and
cover every non-test image once.

``data.split.by=identity`` (open-set face recognition) draws once per class instead, by a hash of
the class name: whole people go to train, val or test, so val and test hold people the model
never trained on; adding people never moves existing ones either.
"""
from __future__ import annotations

import hashlib

from facecls.config.checks import SPLIT_BY, check_ratios
from facecls.errors import UserError


def hash_fraction(relative_path: str, seed: int) -> float:
    """A number in [0, 1) fixed by the path and seed (uniform over paths)."""
    # The raw bytes of the name (a name from another encoding keeps its bytes through
    # surrogateescape); for UTF-8 names these are the UTF-8 bytes, so splits never move.
    digest = hashlib.sha256(f"{seed}\0{relative_path}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(files: list[str], train: float, val: float, test: float, seed: int) -> list[str]:
    """Return 'train', 'val' or 'test' for each relative path."""
    check_ratios(train, val, test)
    out = []
    for f in files:
        u = hash_fraction(f, seed)
        out.append("train" if u < train else "val" if u < train + val else "test")
    return out


def check_split_by(by) -> str:
    """``data.split.by``: image (default) or identity; a one-line error otherwise."""
    if by not in SPLIT_BY:
        raise UserError(f"data.split.by={by} — use {' or '.join(SPLIT_BY)}.")
    return str(by)


def assign_identity_splits(files: list[str], labels: list[int], classes: list[str], train: float, val: float,
                           test: float, seed: int) -> list[str]:
    """'train', 'val' or 'test' for each file, one draw per person: every image of a class
    goes where a stable hash of the class *name* sends it, so no person is in two splits and
    adding people (or images) never moves anyone already there."""
    check_ratios(train, val, test)
    where = []
    for name in classes:
        u = hash_fraction(f"identity\0{name}", seed)
        where.append("train" if u < train else "val" if u < train + val else "test")
    return [where[label] for label in labels]


def check_folds(folds, fold) -> tuple[int, int] | None:
    """``data.split.folds``/``fold`` as ints (None when k-fold is off); a one-line error when out of range."""
    if folds is None:
        return None
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise UserError(f"data.split.folds={folds} is invalid — give a whole number >= 2 "
                        "(or null for one fixed train/val split).")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise UserError(f"data.split.fold={fold} is out of range — with data.split.folds={folds} "
                        f"use 0…{folds - 1} (all folds: -m data.split.fold='range({folds})').")
    return folds, fold


def fold_of(relative_path: str, folds: int, seed: int) -> int:
    """The fold (0…folds−1) of one file: its own hash, salted so it is independent of the
    train/val/test draw, so a file keeps its fold when others are added."""
    return min(int(hash_fraction(f"fold\0{relative_path}", seed) * folds), folds - 1)


def assign_folds(files: list[str], splits: list[str], folds: int, fold: int, seed: int) -> list[str]:
    """K-fold cross-validation over the non-test images: those in fold ``fold`` become 'val',
    the other non-test ones 'train'; 'test' (and anything else) is left exactly as it was."""
    check_folds(folds, fold)
    return [s if s not in ("train", "val") else ("val" if fold_of(f, folds, seed) == fold else "train")
            for f, s in zip(files, splits)]

"""Data-leakage guard: the same image in two splits inflates validation and test scores.

Duplicates are found by a hash of the decoded pixels (identical files decode identically),
so copies under different names or in different class folders are caught too.
"""
from __future__ import annotations

import hashlib
import logging

import torch

log = logging.getLogger(__name__)


def pixel_hashes(pixels: torch.Tensor) -> list[str]:
    flat = pixels.reshape(len(pixels), -1).numpy()
    return [hashlib.sha1(row.tobytes()).hexdigest() for row in flat]


def cross_split_duplicates(hashes: list[str], splits: list[str], files: list[str]) -> list[list[str]]:
    """Groups of files (as 'split:path') with identical pixels spread over more than one split."""
    groups: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        groups.setdefault(h, []).append(i)
    return [[f"{splits[i]}:{files[i]}" for i in rows] for rows in groups.values()
            if len({splits[i] for i in rows}) > 1]


def leaking_rows(hashes: list[str], splits: list[str]) -> set[int]:
    """Rows to drop so no val/test image repeats one from an earlier split (train, then val)."""
    seen = {s: set() for s in ("train", "val")}
    for h, s in zip(hashes, splits):
        if s in seen:
            seen[s].add(h)
    drop = set()
    for i, (h, s) in enumerate(zip(hashes, splits)):
        if (s == "val" and h in seen["train"]) or (s == "test" and (h in seen["train"] or h in seen["val"])):
            drop.add(i)
    return drop


def report(groups: list[list[str]], dropped: int) -> None:
    if not groups:
        return
    examples = "; ".join(" = ".join(g[:3]) for g in groups[:3])
    action = (f"dropped {dropped} of them from val/test" if dropped else
              "set data.drop_duplicates=true to drop them from val/test")
    log.warning("Found %d image(s) present in more than one split (e.g. %s) — %s.",
                len(groups), examples, action)

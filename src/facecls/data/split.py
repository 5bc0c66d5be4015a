"""Train/val/test assignment by a stable hash of each file's relative path.

Each file's split depends only on its own path and the split seed, so adding images to a
class never moves an existing image to another split (no leakage between runs of a growing
dataset), and the same folder always gives the same split on any machine.
"""
from __future__ import annotations

import hashlib

from facecls.errors import UserError


def hash_fraction(relative_path: str, seed: int) -> float:
    """A number in [0, 1) fixed by the path and seed (uniform over paths)."""
    digest = hashlib.sha256(f"{seed}\0{relative_path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def check_ratios(train: float, val: float, test: float) -> None:
    ratios = {"train": train, "val": val, "test": test}
    bad = [k for k, v in ratios.items() if not 0 < v < 1]
    if bad:
        raise UserError(f"data.split.{bad[0]}={ratios[bad[0]]} is out of range — each split "
                        "ratio must be between 0 and 1 (e.g. 0.7/0.15/0.15).")
    if abs(train + val + test - 1) > 1e-6:
        raise UserError(f"data.split ratios sum to {train + val + test:g}, not 1 — e.g. "
                        "data.split.train=0.7 data.split.val=0.15 data.split.test=0.15.")


def assign_splits(files: list[str], train: float, val: float, test: float, seed: int) -> list[str]:
    """Return 'train', 'val' or 'test' for each relative path."""
    check_ratios(train, val, test)
    out = []
    for f in files:
        u = hash_fraction(f, seed)
        out.append("train" if u < train else "val" if u < train + val else "test")
    return out

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


def report(groups: list[list[str]], dropped: int, what: str = "image(s) present") -> None:
    if not groups:
        return
    examples = "; ".join(" = ".join(g[:3]) for g in groups[:3])
    action = (f"dropped {dropped} of them from val/test" if dropped else
              "set data.drop_duplicates=true to drop them from val/test")
    log.warning("Found %d %s in more than one split (e.g. %s) — %s.", len(groups), what, examples, action)


# Near-duplicates: the same photo resized, recompressed or lightly cropped decodes to other
# pixels, so the exact hash misses it. Its small gray thumbnail barely changes, though: two
# images whose 16×16 thumbnails (mean removed, unit length) have a cosine similarity of at
# least NEAR_SIMILARITY are taken for copies. Measured on the synthetic faces at 64 px (all
# drawn by one renderer, so unusually alike): copies resized to 60% and saved as JPEG
# quality 60 score ≥ 0.988, copies cropped by 2% per side ≥ 0.950, while the most similar
# two of the 880 distinct faces score 0.934 — no false alarm. A 4% crop is not caught.
NEAR_SIMILARITY = 0.95


def thumbnails(pixels: torch.Tensor, size: int = 16, chunk: int = 1024) -> torch.Tensor:
    """N×size² float: each uint8 image N×3×H×W as a gray thumbnail, mean removed, unit length."""
    rows = []
    for start in range(0, len(pixels), chunk):
        gray = pixels[start:start + chunk].float().mean(1, keepdim=True)
        small = torch.nn.functional.adaptive_avg_pool2d(gray, (size, size)).flatten(1)
        small = small - small.mean(1, keepdim=True)
        rows.append(small / small.norm(dim=1, keepdim=True).clamp_min(1e-6))
    return torch.cat(rows) if rows else torch.zeros(0, size * size)


def near_duplicate_groups(pixels: torch.Tensor, splits: list[str], files: list[str], exact: list[str],
                          min_similarity: float = NEAR_SIMILARITY, chunk: int = 1024) -> list[list[str]]:
    """Groups of files ('split:path') in more than one split whose thumbnails are at least
    ``min_similarity`` alike, leaving out groups of identical pixels only (those are
    reported by :func:`cross_split_duplicates`)."""
    thumbs = thumbnails(pixels)
    parent = list(range(len(thumbs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, len(thumbs), chunk):  # the similarity matrix in slices: memory N × chunk
        similar = (thumbs[start:start + chunk] @ thumbs.T) >= min_similarity
        for i, j in similar.nonzero().tolist():
            a, b = root(start + i), root(j)
            if a != b:
                parent[b] = a
    groups: dict[int, list[int]] = {}
    for i in range(len(thumbs)):
        groups.setdefault(root(i), []).append(i)
    return [[f"{splits[i]}:{files[i]}" for i in rows] for rows in groups.values()
            if len({splits[i] for i in rows}) > 1 and len({exact[i] for i in rows}) > 1]


def leaking_near_rows(groups: list[list[str]], splits: list[str], files: list[str]) -> set[int]:
    """Rows of val/test images whose near-duplicate group holds an image of an earlier split."""
    row_of = {f"{s}:{f}": i for i, (s, f) in enumerate(zip(splits, files))}
    order = {"train": 0, "val": 1, "test": 2}
    drop = set()
    for group in groups:
        first = min(order.get(member.split(":", 1)[0], 3) for member in group)
        drop |= {row_of[m] for m in group if order.get(m.split(":", 1)[0], 3) > first}
    return drop

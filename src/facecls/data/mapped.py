"""Decoded pixels larger than the memory budget (``data.cache_max_gb``), kept on disk.

Over the budget the uint8 tensor N×3×S×S is decoded straight into a file under the cache
dir (``tensors/<key>.u8``, its shape and skipped files in ``<key>.json``) and memory-mapped:
batches then read their rows from the file and the operating system keeps in memory what
fits (its page cache), instead of the run failing for lack of RAM. Shuffled batches read
rows scattered over the file, so the epochs run at disk speed once the data outgrow RAM.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Callable

import torch

from facecls.errors import UserError
from facecls.io import atomic_write_json

log = logging.getLogger(__name__)

GB = 2**30


def budget_bytes(value) -> int | None:
    """``data.cache_max_gb`` in bytes: a number of GB, ``auto`` (half of this machine's RAM)
    or null (no limit: the pixels always live in memory)."""
    if value is None:
        return None
    if str(value).lower() == "auto":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
        except (ValueError, OSError, AttributeError):  # no sysconf (Windows): no limit
            return None
    try:
        gb = float(value)
    except (TypeError, ValueError):
        gb = -1.0
    if isinstance(value, bool) or not gb > 0:
        raise UserError(f"data.cache_max_gb={value} is invalid — use a size in GB (e.g. 8), auto "
                        "(half the RAM) or null (no limit).")
    return int(gb * GB)


def _paths(path: Path) -> tuple[Path, Path]:
    return path.with_suffix(".u8"), path.with_suffix(".json")


def load_mapped(path: Path):
    """(images, keep, skipped) memory-mapped from an earlier over-budget decode, else None."""
    raw, meta = _paths(path)
    if not (raw.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())
        shape = tuple(info["shape"])
        numel = math.prod(shape)
        if raw.stat().st_size != numel:
            raise ValueError(f"{raw.stat().st_size} bytes for shape {shape}")
        # shared=False: a private mapping, so nothing a run does to the tensor reaches the file
        images = (torch.from_file(str(raw), shared=False, size=numel, dtype=torch.uint8).view(shape)
                  if numel else torch.empty(shape, dtype=torch.uint8))
        return images, torch.tensor(info["keep"], dtype=torch.bool), dict(info["skipped"])
    except Exception as err:  # a damaged cache is rebuilt, not trusted
        log.warning("Ignoring unreadable mapped tensor cache %s (%s)", raw, err)
        return None


def compact_rows_(images: torch.Tensor, keep: torch.Tensor) -> int:
    """Move the kept rows to the front, in order and in place (no second copy of the pixels,
    which a file-backed tensor could not afford); return how many there are."""
    target = 0
    for source in keep.nonzero().flatten().tolist():
        if source != target:
            images[target] = images[source]
        target += 1
    return target


def decode_to_file(path: Path, shape: tuple[int, int, int, int], decode: Callable):
    """Decode into a file-backed tensor of ``shape`` (``decode(out) -> (out, keep, skipped)``
    fills it), drop the unreadable rows, and return it memory-mapped like :func:`load_mapped`."""
    raw, meta = _paths(path)
    raw.parent.mkdir(parents=True, exist_ok=True)
    partial = raw.with_name(f".{raw.name}.partial-{os.getpid()}")
    nbytes = math.prod(shape)
    log.info("The decoded images need %.2f GB, more than data.cache_max_gb: decoding them into %s "
             "and reading batches from there.", nbytes / GB, raw)
    try:
        with open(partial, "wb") as f:
            # Reserve the space now: a full disk must fail here, not as a crash (SIGBUS)
            # when a write into the mapping finds no block behind it.
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(f.fileno(), 0, nbytes)
            else:
                f.truncate(nbytes)
        images = torch.from_file(str(partial), shared=True, size=nbytes, dtype=torch.uint8).view(shape)
        images, keep, skipped = decode(images)
        kept = compact_rows_(images, keep)
        del images  # unmap before resizing the file
        os.truncate(partial, kept * math.prod(shape[1:]))
        os.replace(partial, raw)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise UserError(f"could not write the decoded images to {raw}: {err.strerror or err} — free "
                        f"{nbytes / GB:.1f} GB there or set paths.cache_dir to a bigger disk.") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise

    atomic_write_json(meta, {"shape": [kept, *shape[1:]], "keep": keep.tolist(), "skipped": skipped})
    return load_mapped(path)

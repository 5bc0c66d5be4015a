"""Run-time choices of a training run: seeding, threads, progress bars, memory, compilation, and
the random states a resumed run restores (device and precision: facecls.inference.device)."""
from __future__ import annotations

import ctypes
import logging
import os
import random
import sys

import numpy as np
import torch

from facecls.errors import UserError

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # Set both ways: one process may run several configurations (sweeps, facecls report). Only when it
    # changes: torch.use_deterministic_algorithms imports torch._inductor (≈2 s here) on every call.
    if torch.are_deterministic_algorithms_enabled() != bool(deterministic):
        torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
    if deterministic:
        # cuBLAS needs this for deterministic matmuls; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels


def progress_flag(value) -> bool | None:
    """trainer.progress: auto → None (tqdm shows bars only on a terminal)."""
    if isinstance(value, bool):
        return value
    if str(value).lower() == "auto":
        return None
    raise UserError(f"trainer.progress={value} — use auto, true or false.")


def configure_threads(num_threads) -> None:
    if num_threads:
        torch.set_num_threads(int(num_threads))


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_INT_MAX = 2**31 - 1
_freed_memory_kept = False


def keep_freed_memory(device: torch.device) -> bool:
    """CPU training on Linux (glibc): freed tensor memory stays in the process for the next step
    instead of going back to the OS and being page-faulted in again; True when set (or already).

    PyTorch allocates CPU tensors with malloc. glibc serves blocks over its mmap threshold
    (32 MB at most: the ConvNet's 51 MB FC weight gradient, every val activation) with a fresh
    mmap and unmaps them on free, and trims the heap top when a few tens of MB are free, so the
    same activations and gradients are mapped, zero-filled page by page and unmapped again at
    every step, how many depending on the order of the allocations (aug=basic vs none, fp32 vs
    bf16). Measured (`facecls train`, ConvNet 64 px, 5 fp32 epochs, 2 cores): 1.8–3.7 M page
    faults and 6–11 s of system time per process → 0.4 M (start-up and decoding) and 2 s; epoch
    4.2–5.9 s → 3.8–4.3 s; peak RSS 1.61–1.63 → 1.72–1.86 GB. No mmap for malloc and no trimming
    (below 2 GB free): after the first steps every block is reused, and the process keeps its
    peak heap until it exits. Process-wide, set once (from fit, after the data is loaded).
    """
    global _freed_memory_kept
    if device.type != "cpu" or not sys.platform.startswith("linux"):
        return False
    if _freed_memory_kept:
        return True
    try:
        libc = ctypes.CDLL(None)
        # glibc only: other C libraries read mallopt differently or not at all
        mallopt = libc.mallopt if hasattr(libc, "gnu_get_libc_version") else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _freed_memory_kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
    return _freed_memory_kept


def compile_model(net: torch.nn.Module, enabled) -> torch.nn.Module:
    """trainer.compile: ``torch.compile(net)`` when enabled, else ``net`` unchanged.

    The compiled module shares its parameters with ``net``, so checkpoints (saved from the
    uncompiled model) keep their usual keys. Compilation happens on the first batches and
    costs tens of seconds on a CPU; it pays off only for long runs (docs: performance).
    A model that fails to compile runs eagerly instead of stopping the run."""
    if not enabled:
        return net
    if not isinstance(enabled, bool):
        raise UserError(f"trainer.compile={enabled} — use true or false.")
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # fall back to eager (with a warning) on failure
    log.info("trainer.compile=true: torch.compile compiles the model during the first batches "
             "(slower first epoch); it pays off only when later epochs make up for it.")
    return torch.compile(net)


def capture_rng(order: torch.Generator) -> dict:
    """Every random state a resumed run needs to continue exactly (plain data only)."""
    state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "order": order.get_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy": [state[0], state[1].tolist(), int(state[2]), int(state[3]), float(state[4])],
    }


def restore_rng(state: dict, order: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    order.set_state(state["order"])
    random.setstate((state["python_version"], tuple(state["python"]), None))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))

"""Run-time choices shared by every command: device, seeding, threads, progress bars."""
from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from facecls.errors import UserError

log = logging.getLogger(__name__)


def select_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu. Asking for cuda without one is a user error."""
    name = str(name).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("trainer.device=cuda but this machine has no usable CUDA GPU — use "
                            "trainer.device=cpu (or auto).")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"unknown trainer.device '{name}' — use auto, cpu or cuda.")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this for deterministic matmuls; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
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


def amp_flag(value, device: torch.device) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() == "auto":
        return device.type == "cuda"
    raise UserError(f"trainer.amp={value} — use auto, true or false.")


def configure_threads(num_threads) -> None:
    if num_threads:
        torch.set_num_threads(int(num_threads))

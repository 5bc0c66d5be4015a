"""The device and precision a model runs in, for training and inference alike."""
from __future__ import annotations

import contextlib
import logging

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


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes in bf16 natively (AVX512-BF16 or AMX). Without it, bf16
    autocast is emulated and an epoch was measured 14–16× slower than fp32 (AMD Zen 3, AVX2)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def amp_flag(value, device: torch.device) -> bool:
    """trainer.amp: auto → on for CUDA and for CPUs with native bf16, off otherwise; true on a
    CPU without native bf16 is honoured, with a warning that it will be slower."""
    if str(value).lower() == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    if not isinstance(value, bool):
        raise UserError(f"trainer.amp={value} — use auto, true or false.")
    if value and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("trainer.amp=true on a CPU without native bf16 (no AVX512-BF16 or AMX): bf16 is emulated "
                    "and training will be much slower (measured 14–16× on AVX2) — use trainer.amp=auto or false.")
    return value


def autocast(device: torch.device, amp: bool):
    """The mixed-precision context of a forward pass: bf16 where the device supports it
    (fp16 on older CUDA GPUs), a no-op when ``amp`` is off."""
    if not amp:
        return contextlib.nullcontext()
    dtype = torch.bfloat16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    return torch.autocast(device.type, dtype=dtype)

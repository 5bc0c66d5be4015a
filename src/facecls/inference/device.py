"""The device and precision a model runs in, for training and inference alike."""
from __future__ import annotations

import contextlib
import logging
import platform

import torch

from facecls.errors import UserError

log = logging.getLogger(__name__)


def cuda_available() -> bool:
    """Probe for a usable CUDA GPU (its own function: tests replace it to check the selection)."""
    return torch.cuda.is_available()


def mps_available() -> bool:
    """Probe for Apple silicon's GPU (Metal Performance Shaders); false on builds without it."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def mps_has_bf16() -> bool:
    """MPS computes bf16 from macOS 14 on; older systems have fp16 only."""
    check = getattr(getattr(torch.backends, "mps", None), "is_macos_or_newer", None)
    return bool(check and check(14, 0))


def select_device(name: str) -> torch.device:
    """'auto' → cuda when available, else mps (Apple silicon), else cpu. Asking for cuda or mps
    without one is a user error."""
    name = str(name).lower()
    if name == "auto":
        return torch.device("cuda" if cuda_available() else "mps" if mps_available() else "cpu")
    if name.startswith("cuda"):
        if not cuda_available():
            raise UserError("trainer.device=cuda but this machine has no usable CUDA GPU — use "
                            "trainer.device=cpu (or auto).")
        return torch.device(name)
    if name == "mps":
        if not mps_available():
            raise UserError("trainer.device=mps but this machine has no usable Apple-silicon GPU (MPS) — use "
                            "trainer.device=cpu (or auto).")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"unknown trainer.device '{name}' — use auto, cpu, cuda or mps.")


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes in bf16 natively (AVX512-BF16 or AMX). Without it, bf16
    autocast is emulated and an epoch was measured 14–16× slower than fp32 (AMD Zen 3, AVX2)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def amp_flag(value, device: torch.device) -> bool:
    """trainer.amp: auto → on for CUDA and for CPUs with native bf16, off otherwise; true on a
    CPU without native bf16 is honoured, with a warning that it will be slower.

    MPS's policy: auto → fp32 (MPS autocast is younger than CUDA's, and its fp16 — all macOS 13
    has — would need loss scaling, which this bf16 loop does not run); true → bf16 autocast,
    which needs macOS 14 or newer."""
    if str(value).lower() == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    if not isinstance(value, bool):
        raise UserError(f"trainer.amp={value} — use auto, true or false.")
    if value and device.type == "mps" and not mps_has_bf16():
        raise UserError("trainer.amp=true on MPS needs bf16, which macOS 14 or newer provides — "
                        "use trainer.amp=auto (fp32) or update macOS.")
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


def precision_name(device: torch.device, amp: bool) -> str:
    """What :func:`autocast` computes in — "bf16", "fp16" or "fp32". Recorded with every run:
    trainer.amp=auto gives bf16 on one machine and fp32 on another, and other numbers."""
    if not amp:
        return "fp32"
    return "fp16" if device.type == "cuda" and not torch.cuda.is_bf16_supported() else "bf16"


def device_name(device: torch.device) -> str:
    """The hardware behind ``device``: the GPU's name, or the CPU's model (with its bf16 support)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return device.type
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:  # not Linux
        pass
    return f"{model} ({'native bf16' if cpu_has_native_bf16() else 'no native bf16'})"

"""What a configuration costs in memory, estimated before anything is allocated.

``model.input_size=3000`` gives the ConvNet a 37-billion-parameter fully-connected layer: without
an estimate, torch allocates gigabytes and then fails in an allocator error block. The model is
built on the ``meta`` device (shapes, no storage), so the estimate costs milliseconds and no memory.
"""
from __future__ import annotations

import logging
import os

import torch
from omegaconf import DictConfig

from facecls.errors import UserError
from facecls.io import human_bytes
from facecls.models import build_model
from facecls.models.pretrained import skip_pretrained

log = logging.getLogger(__name__)

FLOAT_BYTES = 4
# per trainable parameter: its gradient and two optimizer moments (Adam; SGD with momentum has one)
STATE_PER_TRAINABLE = 3
# a batch in fp32 and its gradient-sized twin in the backward pass
ACTIVATION_FACTOR = 2


def training_bytes(model_cfg: DictConfig, num_classes: int, batch_size: int, size: int) -> int | None:
    """About how many bytes one training step of this model needs at least: weights, gradients,
    optimizer state (fp32) and one batch's input with its gradient-sized twin. A lower bound —
    layer activations are left out (a forward pass on ``meta`` would count them, but it loads
    torch's meta kernels: seconds of start-up for every run). None when the model cannot be
    built on ``meta``."""
    try:
        with torch.device("meta"):
            model = build_model(skip_pretrained(model_cfg), num_classes=num_classes)
    except Exception as err:  # an exotic module without meta support: no estimate, no refusal
        log.debug("no memory estimate for %s: %s", model_cfg.get("_target_"), err)
        return None
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    batch = batch_size * 3 * size * size
    return FLOAT_BYTES * (params + STATE_PER_TRAINABLE * trainable + ACTIVATION_FACTOR * batch)


def memory_of(device: torch.device) -> int | None:
    """The memory training on ``device`` can use: the GPU's, or the RAM (a cgroup limit if lower)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type != "cpu":
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows)
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        return min(total, int(limit)) if limit.isdigit() else total
    except OSError:
        return total


def check_training_memory(model_cfg: DictConfig, num_classes: int, batch_size: int, size: int,
                          device: torch.device) -> int | None:
    """Refuse, in one line with the estimate, a configuration that cannot fit ``device``'s memory
    — before its weights are allocated. Returns the estimate (bytes) or None."""
    need = training_bytes(model_cfg, num_classes, batch_size, size)
    have = memory_of(device)
    if need is not None and have is not None and need > have:
        raise UserError(f"this model at {size}×{size} px with trainer.batch_size={batch_size} needs about "
                        f"{human_bytes(need)} to train (weights, gradients, optimizer state and one batch), "
                        f"more than the {human_bytes(have)} of {device.type} memory here — lower model.input_size "
                        "or trainer.batch_size.")
    return need

"""Batched colour jitter: per-image brightness, contrast and saturation in a random order."""
from __future__ import annotations

import torch

from facecls.data.augment.base import (
    _GRAY,
    BatchTransform,
    _pair,
    _uniform,
)


class ColorJitter(BatchTransform):
    """Random brightness, contrast and saturation per image of an RGB batch, as
    v2.ColorJitter (no hue).

    Each value v draws a factor uniform in [max(0, 1 - v), 1 + v] (or give a [min, max]
    pair); the steps run in a random order per image, with torchvision's formulas:
    brightness scales the image, contrast blends it with the mean of its grayscale,
    saturation with its grayscale.
    """

    def __init__(self, brightness=None, contrast=None, saturation=None, hue=None):
        super().__init__()
        if hue:
            raise ValueError("hue is not supported batched — use torchvision.transforms.v2.ColorJitter "
                             "(the recipe then runs one image at a time)")
        ranges = {"brightness": _pair(brightness, "brightness", 1.0, 0.0),
                  "contrast": _pair(contrast, "contrast", 1.0, 0.0),
                  "saturation": _pair(saturation, "saturation", 1.0, 0.0)}
        self.ranges = {k: v for k, v in ranges.items() if v is not None}

    def sample(self, n, height, width):
        factors = {name: _uniform(n, *bounds) for name, bounds in self.ranges.items()}
        # a random order of the active steps for every image (as v2's randperm per call)
        order = torch.rand(n, len(self.ranges)).argsort(dim=1)
        return {**factors, "order": order}

    def apply(self, x, params):
        names = list(self.ranges)
        if not names:
            return x
        # Every step is linear in the colours of a pixel: out = A·rgb + bias, clamped to [0, 1]
        # (brightness: A = f·I; saturation: A = f·I + (1 - f)·[luma weights in every row];
        # contrast: A = f·I, bias = (1 - f)·mean luma). One batched matmul per step.
        n, channels = x.shape[0], x.shape[-3]
        flat = x.reshape(n, channels, -1)
        factors = torch.stack([params[name] for name in names], dim=1)  # N × steps, CPU
        order = params["order"]
        eye, luma = torch.eye(channels, dtype=torch.float64), torch.tensor(_GRAY, dtype=torch.float64)
        for step in range(len(names)):
            which = order[:, step]  # per image: the index into `names` applied at this step
            f = factors.gather(1, which[:, None])[:, 0]
            # 1 - f for the images that run saturation / contrast at this step, else 0
            share = {kind: (1.0 - f) * (which == names.index(kind)) if kind in names else torch.zeros_like(f)
                     for kind in ("saturation", "contrast")}
            matrix = f[:, None, None] * eye + share["saturation"][:, None, None] * luma.expand(channels, -1)
            matrix = matrix.to(device=x.device, dtype=x.dtype, non_blocking=True)
            contrast = share["contrast"]
            if bool(contrast.any()):  # a CPU tensor: no device sync
                mean_luma = flat.mean(dim=-1) @ luma.to(device=x.device, dtype=x.dtype)
                bias = (contrast.to(device=x.device, dtype=x.dtype) * mean_luma).view(n, 1, 1)
                flat = torch.baddbmm(bias, matrix, flat)
            else:
                flat = torch.bmm(matrix, flat)
            flat = flat.clamp_(0.0, 1.0)
        return flat.view(x.shape)

"""Batched geometric transforms: horizontal flip, affine warp, random erasing."""
from __future__ import annotations

import math
from numbers import Number
from typing import Sequence

import torch

from facecls.data.augment.base import (
    BatchTransform,
    _check_interpolation,
    _pair,
    _uniform,
    _values,
    affine_theta,
    warp,
)


class RandomHorizontalFlip(BatchTransform):
    """Mirror each image left-right with probability ``p`` (as v2.RandomHorizontalFlip)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = float(p)

    def sample(self, n, height, width):
        return {"flip": torch.rand(n) < self.p}

    def apply(self, x, params):
        flip = params["flip"].to(x.device, non_blocking=True).view(-1, *([1] * (x.dim() - 1)))
        return torch.where(flip, x.flip(-1), x)


class RandomAffine(BatchTransform):
    """Random rotation, translation, scale and shear per image, as v2.RandomAffine.

    degrees: v → angle uniform in [-v, v] (or a [min, max] pair); translate: [a, b] →
    horizontal shift uniform in ±a·width and vertical in ±b·height, rounded to whole pixels
    as torchvision does; scale: [min, max] uniform; shear: v, [min, max] (x only) or
    [xmin, xmax, ymin, ymax] degrees. interpolation: "nearest" (torchvision's default) or
    "bilinear"; fill: the value of pixels from outside the image.
    """

    def __init__(self, degrees=0.0, translate: Sequence[float] | None = None, scale: Sequence[float] | None = None,
                 shear=None, interpolation: str = "nearest", fill=0.0):
        super().__init__()
        self.degrees = _pair(degrees, "degrees") or (0.0, 0.0)
        if translate is not None:
            translate = [float(t) for t in translate]
            if len(translate) != 2 or not all(0.0 <= t <= 1.0 for t in translate):
                raise ValueError(f"translate={translate} must be two fractions in [0, 1]")
        self.translate = translate
        if scale is not None:
            scale = [float(s) for s in scale]
            if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
                raise ValueError(f"scale={scale} must be a [min, max] pair of positive numbers")
        self.scale = scale
        if shear is None or isinstance(shear, Number):
            shear = _pair(shear, "shear")
            self.shear = None if shear is None else (*shear, 0.0, 0.0)
        else:
            shear = [float(s) for s in shear]
            if len(shear) not in (2, 4):
                raise ValueError(f"shear={shear} must be one number, [min, max] or [xmin, xmax, ymin, ymax]")
            self.shear = tuple(shear) if len(shear) == 4 else (*shear, 0.0, 0.0)
        self.interpolation = _check_interpolation(interpolation)
        self.fill = _values(fill, "fill")

    def sample(self, n, height, width):
        angle = _uniform(n, *self.degrees)
        translate = torch.zeros(n, 2, dtype=torch.float64)
        if self.translate is not None:
            max_dx, max_dy = self.translate[0] * width, self.translate[1] * height
            translate = torch.stack([_uniform(n, -max_dx, max_dx), _uniform(n, -max_dy, max_dy)], dim=1).round()
        scale = _uniform(n, *self.scale) if self.scale is not None else torch.ones(n, dtype=torch.float64)
        shear = torch.zeros(n, 2, dtype=torch.float64)
        if self.shear is not None:
            shear = torch.stack([_uniform(n, *self.shear[:2]), _uniform(n, *self.shear[2:])], dim=1)
        return {"angle": angle, "translate": translate, "scale": scale, "shear": shear}

    def apply(self, x, params):
        theta = affine_theta(params["angle"], params["translate"], params["scale"], params["shear"],
                             x.shape[-2], x.shape[-1])
        return warp(x, theta, self.interpolation, self.fill)


class RandomErasing(BatchTransform):
    """Erase a random rectangle per image with probability ``p``, as v2.RandomErasing.

    The rectangle covers a fraction of the image uniform in ``scale`` with an aspect ratio
    log-uniform in ``ratio`` (up to 10 tries for one that fits, else the image is kept);
    ``value``: a number, one per channel, or "random" (normal noise, drawn on the device).
    """

    def __init__(self, p: float = 0.5, scale: Sequence[float] = (0.02, 0.33), ratio: Sequence[float] = (0.3, 3.3),
                 value=0.0):
        super().__init__()
        self.p = float(p)
        self.scale = tuple(float(s) for s in scale)
        self.ratio = tuple(float(r) for r in ratio)
        if len(self.scale) != 2 or not 0 <= self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale={list(scale)} must be a [min, max] pair of fractions")
        if len(self.ratio) != 2 or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio={list(ratio)} must be a [min, max] pair of positive numbers")
        self.value = value if isinstance(value, str) else _values(value, "value")
        if isinstance(value, str) and value != "random":
            raise ValueError(f"value={value!r} — use a number, one per channel, or 'random'")

    def sample(self, n, height, width, tries: int = 10):
        area = height * width * torch.empty(n, tries, dtype=torch.float64).uniform_(*self.scale)
        log_ratio = torch.empty(n, tries, dtype=torch.float64).uniform_(math.log(self.ratio[0]),
                                                                        math.log(self.ratio[1]))
        h = (area * log_ratio.exp()).sqrt().round()
        w = (area / log_ratio.exp()).sqrt().round()
        fits = (h < height) & (w < width)
        first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first try that fits
        h, w = h.gather(1, first)[:, 0].long(), w.gather(1, first)[:, 0].long()
        top = (torch.rand(n, dtype=torch.float64) * (height - h + 1)).floor().long()
        left = (torch.rand(n, dtype=torch.float64) * (width - w + 1)).floor().long()
        erase = (torch.rand(n) < self.p) & fits.any(dim=1)
        return {"erase": erase, "box": torch.stack([top, left, h, w], dim=1)}

    def apply(self, x, params):
        box = params["box"].to(x.device, non_blocking=True)
        erase = params["erase"].to(x.device, non_blocking=True)
        top, left, h, w = box.unbind(dim=1)
        rows = torch.arange(x.shape[-2], device=x.device)
        cols = torch.arange(x.shape[-1], device=x.device)
        in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None]) & erase[:, None]  # N×H
        in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # N×W
        mask = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)  # N×1×H×W
        if isinstance(self.value, str):
            value = torch.randn_like(x)
        else:
            value = torch.tensor(self.value, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return torch.where(mask, value, x)

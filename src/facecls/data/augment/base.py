"""The batched-transform base class, Compose, and the shared maths (affine matrices, warping,
colour blends, parameter checks)."""
from __future__ import annotations

from numbers import Number
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
_GRAY = (0.2989, 0.587, 0.114)
_INTERPOLATIONS = ("nearest", "bilinear")


class BatchTransform(nn.Module):
    """Base class: ``forward`` takes an N×C×H×W float batch in [0, 1] and returns a new one
    of the same shape, dtype and device; each image gets its own random parameters."""

    def sample(self, n: int, height: int, width: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0], x.shape[-2], x.shape[-1]))


class Compose(BatchTransform):
    """Batched transforms in turn. A uint8 batch is first scaled to float in [0, 1]."""

    def __init__(self, transforms: Sequence[BatchTransform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().mul_(1.0 / 255.0)
        for transform in self.transforms:
            x = transform(x)
        return x


# ---------------------------------------------------------------------------- helpers

def _uniform(n: int, low: float, high: float) -> torch.Tensor:
    """n draws, uniform in [low, high), from torch's global CPU generator."""
    return torch.empty(n, dtype=torch.float64, device="cpu").uniform_(low, high)


def _pair(value, name: str, centre: float = 0.0, low: float | None = None) -> tuple[float, float] | None:
    """torchvision's reading of a range: a number v → [centre - v, centre + v] (cut at ``low``),
    a pair → itself; 0/None → None (off)."""
    if value is None:
        return None
    if isinstance(value, Number):
        if value < 0:
            raise ValueError(f"{name}={value} must be non-negative")
        if value == 0:
            return None
        lo = centre - float(value)
        result = (lo if low is None else max(low, lo), centre + float(value))
    else:
        values = [float(v) for v in value]
        if len(values) != 2 or values[0] > values[1]:
            raise ValueError(f"{name}={list(values)} must be one number or a [min, max] pair")
        result = (values[0], values[1])
    return None if result == (centre, centre) else result


def _values(value, name: str) -> tuple[float, ...]:
    """A fill value: one number, or one per channel."""
    if isinstance(value, Number):
        return (float(value),)
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a number or one number per channel") from None


def _gray(x: torch.Tensor) -> torch.Tensor:
    """N×1×H×W luma of an RGB batch (torchvision's weights)."""
    r, g, b = x.unbind(dim=-3)
    return (r * _GRAY[0]).add_(g, alpha=_GRAY[1]).add_(b, alpha=_GRAY[2]).unsqueeze(-3)


def _blend(x: torch.Tensor, ref: torch.Tensor | float, factor: torch.Tensor) -> torch.Tensor:
    """factor·x + (1 - factor)·ref, clamped to [0, 1]; ``factor`` is N×1×1×1 (one per image)."""
    if isinstance(ref, float) and ref == 0.0:
        return (x * factor).clamp_(0.0, 1.0)
    return torch.addcmul(ref * (1.0 - factor), x, factor).clamp_(0.0, 1.0)


def affine_theta(angle: torch.Tensor, translate: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor,
                 height: int, width: int) -> torch.Tensor:
    """N×2×3 matrices for ``F.affine_grid`` (align_corners=False): torchvision's affine
    (``v2.functional.affine`` with the default centre) for every image at once.

    angle: N degrees (torchvision's convention: positive turns clockwise on screen);
    translate: N×2 pixels (x, y); scale: N; shear: N×2 degrees (x, y).
    """
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear[:, 0]), torch.deg2rad(shear[:, 1])
    # rotate-scale-shear without the scale (torchvision's _get_inverse_affine_matrix)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    # its inverse (determinant 1) over the scale: output pixel → input pixel, about the centre
    m00, m01, m10, m11 = d / scale, -b / scale, -c / scale, a / scale
    tx, ty = translate[:, 0], translate[:, 1]
    m02 = -(m00 * tx + m01 * ty)
    m12 = -(m10 * tx + m11 * ty)
    # pixels → affine_grid's normalised coordinates (x / (W/2), y / (H/2))
    theta = torch.stack([torch.stack([m00, m01 * height / width, m02 * 2.0 / width], dim=-1),
                         torch.stack([m10 * width / height, m11, m12 * 2.0 / height], dim=-1)], dim=-2)
    return theta


def warp(x: torch.Tensor, theta: torch.Tensor, interpolation: str = "nearest", fill=0.0) -> torch.Tensor:
    """One ``grid_sample`` of the whole batch with per-image matrices ``theta`` (N×2×3, any
    device/dtype: moved to x's). Outside pixels become ``fill`` (a number or one per channel)."""
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    fills = _values(fill, "fill")
    if not any(fills):
        return F.grid_sample(x, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    # a channel of ones shows which output pixels come from inside the image (as torchvision)
    ones = torch.ones_like(x[:, :1])
    out, inside = F.grid_sample(torch.cat([x, ones], dim=1), grid, mode=interpolation, padding_mode="zeros",
                                align_corners=False).split([x.shape[1], 1], dim=1)
    fill_t = torch.tensor(fills, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if interpolation == "nearest":
        return torch.where(inside < 0.5, fill_t, out)
    return (out - fill_t).mul_(inside).add_(fill_t)


def _check_interpolation(interpolation: str) -> str:
    interpolation = str(interpolation).lower()
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r} — use one of {', '.join(_INTERPOLATIONS)}")
    return interpolation


# ---------------------------------------------------------------------------- transforms

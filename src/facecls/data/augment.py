"""Batched train-time augmentation: every image of a batch gets its own random parameters.

torchvision.transforms.v2 draws ONE set of random parameters per call, so facecls used to
call it once per image — hundreds of tiny operations per batch, slow on a CPU and slower
still when other processes share the cores. The classes here take the whole batch
(N×C×H×W float in [0, 1], on any device) and draw N sets of parameters at once, then apply
them in a few vectorised calls: a flip mask, per-sample affine matrices through ONE
``affine_grid`` + ``grid_sample``, per-sample colour factors as 3×3 colour matrices (one
batched matmul per colour step).

They keep the meaning of torchvision's parameters (``conf/aug/basic.yaml`` reads as the v2
recipe did) and reproduce its formulas: the same parameter distributions, the same affine
matrix (angle, whole-pixel translation, scale and shear about the image centre), the same
colour blends with a random order of the colour steps per image. Differences: values stay
float (v2 on uint8 rounds after every step) and a bilinear warp with ``fill=0`` pads with
zeros (v2 additionally multiplies the border pixels by their coverage).

Random numbers: parameters are drawn on the CPU from torch's global generator — the one
facecls seeds from ``seed`` and saves/restores with a checkpoint — and then copied to the
batch's device, so a run repeats exactly from its seed and resumes exactly, on CPU and
CUDA alike. (Only ``RandomErasing(value="random")`` draws its noise on the device.)

Each transform has ``sample(n, height, width)`` → a dict of CPU tensors (one row per image)
and ``apply(x, params)``; ``forward(x)`` is ``apply(x, sample(...))``.
"""
from __future__ import annotations

import math
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


class TrivialAugment(BatchTransform):
    """TrivialAugment (Müller & Hutter 2021), batched: each image gets ONE operation, drawn
    uniformly from 14, at a magnitude drawn uniformly from ``num_magnitude_bins`` levels
    between 0 and the operation's maximum (with a random sign where that makes sense).

    The operations and the formulas are torchvision's TrivialAugmentWide ones: identity,
    shear x/y (up to ``shear``), translate x/y (up to ``translate`` × the image side),
    rotate (up to ``degrees``), brightness / colour (saturation) / contrast / sharpness
    (factor 1 ± up to ``enhance``), posterize (8 bits down to ``min_bits``), solarize
    (threshold 1 → 0), autocontrast and equalize. The defaults are the wide ranges of
    torchvision's TrivialAugmentWide (translate 32 px of a 224 px image); shears here are
    about the image centre (torchvision shears about the top-left corner).
    Each operation runs once on the images that drew it (geometric ones share one warp).
    """

    OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
           "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")
    _SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
               "sharpness"}
    _GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")

    def __init__(self, num_magnitude_bins: int = 31, shear: float = 0.99, translate: float = 32 / 224,
                 degrees: float = 135.0, enhance: float = 0.99, min_bits: int = 2,
                 interpolation: str = "nearest", fill=0.0):
        super().__init__()
        if num_magnitude_bins < 2:
            raise ValueError(f"num_magnitude_bins={num_magnitude_bins} must be at least 2")
        if not 1 <= int(min_bits) <= 8:
            raise ValueError(f"min_bits={min_bits} must be in 1..8")
        self.num_magnitude_bins = int(num_magnitude_bins)
        self.maximum = {"shear_x": float(shear), "shear_y": float(shear), "translate_x": float(translate),
                        "translate_y": float(translate), "rotate": float(degrees), "brightness": float(enhance),
                        "color": float(enhance), "contrast": float(enhance), "sharpness": float(enhance)}
        self.min_bits = int(min_bits)
        self.interpolation = _check_interpolation(interpolation)
        self.fill = _values(fill, "fill")

    def sample(self, n, height, width):
        op = torch.randint(len(self.OPS), (n,))
        level = torch.randint(self.num_magnitude_bins, (n,)).double() / (self.num_magnitude_bins - 1)  # 0..1
        sign = torch.randint(2, (n,)).double() * 2 - 1
        return {"op": op, "level": level, "sign": sign}

    def magnitude(self, name: str, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        """The operation's parameter at ``level`` in [0, 1] (CPU tensors, one per image)."""
        if name in self.maximum:
            return level * self.maximum[name] * (sign if name in self._SIGNED else 1.0)
        if name == "posterize":
            return 8 - (level * (8 - self.min_bits)).round()  # bits kept
        if name == "solarize":
            return 1.0 - level  # threshold
        return torch.zeros_like(level)

    def apply(self, x, params):
        op, level, sign = params["op"], params["level"], params["sign"]
        out = x.clone()
        height, width = x.shape[-2], x.shape[-1]
        shape = (-1,) + (1,) * (x.dim() - 1)

        def rows(mask: torch.Tensor) -> torch.Tensor:
            return mask.nonzero()[:, 0]  # CPU: no device sync

        geometric = rows(torch.isin(op, torch.tensor([self.OPS.index(g) for g in self._GEOMETRIC])))
        if len(geometric):  # one warp for all the images that drew a geometric operation
            g_op, g_level, g_sign = op[geometric], level[geometric], sign[geometric]

            def amount(name: str) -> torch.Tensor:  # the operation's magnitude where drawn, else 0
                return (g_op == self.OPS.index(name)).double() * self.magnitude(name, g_level, g_sign)

            angle = amount("rotate")
            shear = torch.rad2deg(torch.atan(torch.stack([amount("shear_x"), amount("shear_y")], dim=1)))
            translate = torch.stack([amount("translate_x") * width, amount("translate_y") * height], dim=1).round()
            theta = affine_theta(angle, translate, torch.ones_like(angle), shear, height, width)
            index = geometric.to(x.device)
            out.index_copy_(0, index, warp(x.index_select(0, index), theta, self.interpolation, self.fill))

        for name in ("brightness", "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast",
                     "equalize"):
            picked = rows(op == self.OPS.index(name))
            if not len(picked):
                continue
            index = picked.to(x.device)
            images = x.index_select(0, index)
            value = self.magnitude(name, level[picked], sign[picked]).to(device=x.device, dtype=x.dtype).view(shape)
            out.index_copy_(0, index, self._colour(name, images, value))
        return out

    @staticmethod
    def _colour(name: str, x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """torchvision's float formulas, with one ``value`` per image."""
        from torchvision.transforms.v2 import functional as TF

        if name == "brightness":
            return _blend(x, 0.0, 1.0 + value)
        if name == "color":
            return _blend(x, _gray(x), 1.0 + value)
        if name == "contrast":
            return _blend(x, _gray(x).mean(dim=(-2, -1), keepdim=True), 1.0 + value)
        if name == "sharpness":
            return _blend(x, TF.adjust_sharpness(x, 0.0), 1.0 + value)  # factor 0: the smoothed image
        if name == "posterize":  # keep `value` bits of the 8-bit level (as on uint8 images: 8 bits = unchanged)
            step = torch.exp2(8.0 - value)
            return x.mul(255.0).round_().div_(step).floor_().mul_(step).div_(255.0)
        if name == "solarize":
            return torch.where(x >= value, 1.0 - x, x)
        if name == "autocontrast":
            return TF.autocontrast(x)
        return TF.equalize(x)  # per image and channel (rounds to 256 levels, as torchvision)


# The torchvision.transforms.v2 classes that have a batched version here (for the log line).
BATCHED_VERSIONS = {
    "RandomHorizontalFlip": "RandomHorizontalFlip",
    "RandomAffine": "RandomAffine",
    "ColorJitter": "ColorJitter (no hue)",
    "RandomErasing": "RandomErasing",
    "TrivialAugmentWide": "TrivialAugment",
}

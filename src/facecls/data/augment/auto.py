"""Batched TrivialAugment: one operation per image at a random magnitude."""
from __future__ import annotations

import torch

from facecls.data.augment.base import (
    BatchTransform,
    _blend,
    _check_interpolation,
    _gray,
    _values,
    affine_theta,
    warp,
)


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
        from torchvision.transforms.v2 import functional as TF  # deferred: torchvision loads its model zoo

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

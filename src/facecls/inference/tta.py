"""Test-time augmentation (``eval.tta=[flip]``, ``[flip, five_crop]``): score each image as the
average softmax over several views of it.

A list of transforms composes as a product, like torchvision's TenCrop: ``[flip]`` is the image
and its mirror (2 views), ``[five_crop]`` the four corner crops and the centre crop, each resized
back to the model's input size (5 views), ``[flip, five_crop]`` both crossed (10 views). The views
are made from the model's prepared input (already resized and normalised): a flip, crop or
resize commutes with the per-channel normalisation, so no image is decoded twice.

:class:`TTAModel` wraps a classifier and returns the log of the averaged softmax, so everything
that scores logits (loss, accuracy, calibration, predictions) scores the TTA prediction unchanged.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from facecls.errors import UserError

CROP_FRACTION = 0.875  # five_crop's crop side, as a fraction of the input (ImageNet's 224/256)


def _identity(x: torch.Tensor) -> list[torch.Tensor]:
    return [x]


def _flip(x: torch.Tensor) -> list[torch.Tensor]:
    return [x, x.flip(-1)]


def _five_crop(x: torch.Tensor) -> list[torch.Tensor]:
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * CROP_FRACTION)), max(1, round(w * CROP_FRACTION))
    corners = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
    out = []
    for top, left in corners:
        crop = x[..., top:top + ch, left:left + cw]
        # uint8 pixels (predict's runners normalise inside the model) are resized in float and rounded back
        resized = nn.functional.interpolate(crop.float(), size=(h, w), mode="bilinear", align_corners=False)
        out.append(resized if x.is_floating_point() else resized.round().clamp(0, 255).to(x.dtype))
    return out


# name → the views one transform makes of a batch (each a batch of the same shape)
TRANSFORMS: dict[str, Callable[[torch.Tensor], list[torch.Tensor]]] = {
    "none": _identity, "flip": _flip, "five_crop": _five_crop,
}


def tta_names(value) -> list[str]:
    """``eval.tta`` as a list of transform names: null / [] / none → no TTA; a string is one name."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else list(value)
    names = [str(n).strip().lower() for n in names if str(n).strip().lower() not in ("", "none")]
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise UserError(f"unknown test-time augmentation {unknown[0]!r} — use a list of: "
                        f"{', '.join(n for n in TRANSFORMS if n != 'none')} (e.g. eval.tta=[flip]).")
    return names


def views(x: torch.Tensor, names: Iterable[str]) -> list[torch.Tensor]:
    """Every view of the batch ``x``: the product of the named transforms."""
    out = [x]
    for name in names:
        out = [v for base in out for v in TRANSFORMS[name](base)]
    return out


class TTAModel(nn.Module):
    """``net`` scored over the views of each batch: forward returns log(mean softmax). ``net`` may
    also be any callable from a batch to logits (predict's ONNX and TorchScript runners)."""

    def __init__(self, net, names: Iterable[str]):
        super().__init__()
        self.net, self.names = net, list(names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batches = views(x, self.names)
        # one forward over all views (a bigger batch is cheaper than several small ones)
        logits = self.net(torch.cat(batches)).float()
        probs = logits.softmax(1).view(len(batches), x.shape[0], -1).mean(0)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


def with_tta(net: nn.Module, value) -> nn.Module:
    """``net`` itself when ``value`` names no transform, else its TTA wrapper."""
    names = tta_names(value)
    return TTAModel(net, names) if names else net


def describe(value) -> str:
    """'flip × five_crop (10 views)' for logs and eval.json; 'none' without TTA."""
    names = tta_names(value)
    if not names:
        return "none"
    count = len(views(torch.zeros(1, 1, 8, 8), names))
    return f"{' × '.join(names)} ({count} views)"

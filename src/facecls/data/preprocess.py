"""How an image becomes model input (size, crop, normalisation, resize filter).

Its own module so that models (which carry their preprocessing, as timm's do) and checkpoints
can name it without importing the image decoder."""
from __future__ import annotations

from dataclasses import dataclass

from facecls.errors import UserError

# The filters PIL resizes with (nearest-exact is tensor-only).
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes model input: resize (and crop) to ``size`` then normalise.

    ``resize=None`` squashes the whole image to size×size; an int resizes the shorter side
    to ``resize`` and centre-crops size×size (torchvision's ImageNet-style preprocessing).
    ``interpolation`` is the resize filter (a torchvision ``InterpolationMode`` value: the
    pretrained weights' own, e.g. bicubic for EfficientNet; always antialiased). Checkpoints
    written before it existed hold no ``interpolation`` and load as bilinear, as they were made.
    """

    size: int
    resize: int | None = None
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"unknown resize interpolation '{self.interpolation}' — choose one of: "
                            f"{', '.join(INTERPOLATIONS)}.")

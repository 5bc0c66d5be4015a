"""What every `facecls visualize` kind shares: which images to show, and how a uint8 image
becomes a picture and a prediction."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import ListConfig

from facecls.config.checks import check_split
from facecls.data.decode import load_image
from facecls.errors import UserError


@dataclass
class Picked:
    """One image chosen for a figure."""

    pixels: torch.Tensor    # uint8 3×H×W, as the model's preprocessing made it
    label: int | None       # true class index (None: an outside file whose class is unknown)
    name: str               # file name shown in tables
    tag: str                # short id for file names: test12, or the file's stem
    index: int | None = None  # position in the split, when it came from one


def _as_index(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def pick_images(spec, run, split_name: str) -> list[Picked]:
    """``image=`` → the images it names: an index into the split, a list of indices, or a file.

    A file inside a class folder of the training data keeps that class as its true label."""
    split = run.data.split(check_split(split_name))
    specs = list(spec) if isinstance(spec, (list, tuple, ListConfig)) else [spec]
    picked = []
    for item in specs:
        index = _as_index(item)
        if index is not None:
            if not -len(split) <= index < len(split):
                raise UserError(f"image={index} is out of range — the {split_name} split has {len(split)} "
                                f"images (0…{len(split) - 1}); pick another index or split=….")
            index %= len(split)
            picked.append(Picked(split.inputs[index], int(split.labels[index]), split.files[index],
                                 f"{split_name}{index}", index))
            continue
        path = Path(str(item)).expanduser()
        if not path.is_file():
            raise UserError(f"image={item} is neither an index into the {split_name} split nor an "
                            "existing image file — give e.g. image=3 or image=path/to/face.jpg.")
        try:
            pixels = load_image(path, run.data.preprocess)
        except Exception as err:
            raise UserError(f"cannot read the image '{path}' ({type(err).__name__}) — give a JPEG or "
                            "PNG file.") from None
        classes = run.classes
        label = classes.index(path.parent.name) if path.parent.name in classes else None
        picked.append(Picked(pixels, label, path.name, path.stem))
    return picked


def to_picture(pixels: torch.Tensor) -> np.ndarray:
    """uint8 3×H×W tensor → H×W×3 array for imshow."""
    return pixels.detach().cpu().permute(1, 2, 0).numpy()


@torch.no_grad()
def predict(model: torch.nn.Module, prepare, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted class and its softmax probability for a uint8 batch N×3×H×W."""
    probs = model(prepare(pixels, train=False)).float().softmax(1)
    confidence, predicted = probs.max(1)
    return predicted.cpu(), confidence.cpu()


def class_name(classes: list[str], label: int | None) -> str:
    return "?" if label is None else classes[label]

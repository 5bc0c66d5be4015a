"""Class imbalance: ``trainer.class_weights`` (a weight per class in the cross-entropy) and
``data.sampler`` (a class-balanced order of the in-memory batches, see
facecls.data.batches.iterate_batches)."""
from __future__ import annotations

import torch
from omegaconf import ListConfig

from facecls.errors import UserError

SAMPLERS = (None, "balanced")


def class_weights(option, labels: torch.Tensor, classes: list[str]) -> list[float] | None:
    """``null`` → None; ``balanced`` → n / (classes × images of the class) over the training
    labels (scikit-learn's 'balanced': a class with half the average count weighs 2); a list
    → one weight per class, in the order of the class names."""
    if option is None:
        return None
    if option == "balanced":
        counts = torch.bincount(labels, minlength=len(classes)).double()
        if (counts == 0).any():
            missing = [c for c, n in zip(classes, counts.tolist()) if not n]
            raise UserError(f"trainer.class_weights=balanced needs training images of every class; none of: "
                            f"{', '.join(missing[:5])} — add images or give the weights as a list.")
        return (counts.sum() / (len(classes) * counts)).tolist()
    if isinstance(option, (list, tuple, ListConfig)):
        values = list(option)
        if len(values) != len(classes) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  and v >= 0 for v in values):
            raise UserError(f"trainer.class_weights has {len(values)} values for {len(classes)} classes — give one "
                            f"number >= 0 per class, in this order: {', '.join(classes[:8])}"
                            f"{', …' if len(classes) > 8 else ''} (or balanced).")
        return [float(v) for v in values]
    raise UserError(f"trainer.class_weights={option} — use null, balanced or a list with one weight per class.")


def check_sampler(option) -> bool:
    """data.sampler: null (every image once per epoch, shuffled) or balanced."""
    if option not in SAMPLERS:
        raise UserError(f"data.sampler={option} — use null (shuffle) or balanced.")
    return option == "balanced"

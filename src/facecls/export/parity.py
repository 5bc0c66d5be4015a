"""Does the exported file compute what the checkpoint computes? Both runners score the same
uint8 images (the run's val split, as decoded for training) in batches of several sizes — a
dynamic batch axis that silently kept the example's size would show here — and the largest
|Δ output| and the argmax agreement are reported."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch

from facecls.errors import UserError
from facecls.inference.loading import load_run
from facecls.inference.runners import Runner

log = logging.getLogger(__name__)


@dataclass
class Parity:
    images: int
    inputs: str              # "val split" or "random images (…)"
    max_abs_diff: float      # the largest |exported − PyTorch| over every output value
    argmax_agreement: float  # the share of images whose top class (or nearest dimension) agrees
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def line(self) -> str:
        return (f"parity on {self.images} {self.inputs} images: max |Δ| {self.max_abs_diff:.3g} "
                f"(tolerance {self.tolerance:g}), argmax agreement {self.argmax_agreement:.4f}")


def parity_images(ckpt_path, split: str, max_images: int, size: int, cache_dir: str | None) -> tuple[torch.Tensor, str]:
    """Up to ``max_images`` uint8 images of the run's ``split``; seeded random pixels when the
    run's data is not on this machine (said in the report)."""
    try:
        run = load_run(ckpt_path, "cpu", cache_dir=cache_dir, progress=False, allow_embedding=True)
        images = run.data.split(split).inputs[:max_images]
        if images.dtype == torch.uint8 and len(images):
            return images, f"{split}-split"
    except UserError as err:
        log.warning("Parity on random images: the run's data could not be loaded (%s)", err)
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (min(max_images, 64), 3, size, size), dtype=torch.uint8, generator=generator), \
        "random"


def check_parity(reference: Runner, exported: Runner, images: torch.Tensor, inputs: str, tolerance: float) -> Parity:
    """Score ``images`` with both runners in batches of 1, 7 and 64 images."""
    worst, agree, start = 0.0, 0, 0
    sizes = iter([1, 7])
    while start < len(images):
        batch = images[start:start + next(sizes, 64)]
        expected, got = reference(batch), exported(batch)
        if got.shape != expected.shape:
            raise UserError(f"the exported model returned shape {tuple(got.shape)} for a batch of {len(batch)} "
                            f"where PyTorch returns {tuple(expected.shape)} — the batch axis is not dynamic.")
        worst = max(worst, float((got - expected).abs().max()))
        agree += int((got.argmax(1) == expected.argmax(1)).sum())
        start += len(batch)
    return Parity(len(images), inputs, worst, agree / max(1, len(images)), tolerance)

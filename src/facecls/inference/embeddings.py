"""Face embeddings of many images, computed once each, in batches: what training's
``val_verif_acc``, ``facecls verify``, ``enroll``, ``identify`` and serve compare.

An embedding is :meth:`facecls.models.base.FaceModel.embed` (an embedding model's neck, or a
classifier's penultimate features), L2-normalised, so the cosine similarity of two images is
the dot product of their rows. ``flip`` fuses each image with its mirror image (the sum of the
two un-normalised embeddings, then normalised), the usual test-time trick of face verification.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from facecls.inference.evaluate import EvalSettings


@torch.inference_mode()
def embed_images(model: nn.Module, images: torch.Tensor, prepare: Callable, settings: EvalSettings,
                 flip: bool = False) -> torch.Tensor:
    """L2-normalised float32 embeddings N×D (on the CPU) of uint8 images N×3×H×W.

    Args:
        model: a FaceModel (anything with ``embed``); put in eval mode for the call.
        images: decoded uint8 images, as a split holds them.
        prepare: the run's batch preparer (normalisation onto the device; no augmentation).
        settings: device, batch size and precision (``settings.autocast()``).
        flip: also embed each mirrored image and fuse the two before normalising.
    """
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(images), settings.batch_size):
            x = prepare(images[start:start + settings.batch_size], train=False)
            with settings.autocast():
                emb = model.embed(x).float()
                if flip:
                    emb = emb + model.embed(x.flip(-1)).float()
            out.append(F.normalize(emb, dim=1).cpu())
    finally:
        model.train(was_training)
    if not out:
        return torch.empty(0, 0)
    return torch.cat(out)


def runner_embeddings(runner: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int,
                      flip: bool = False) -> torch.Tensor:
    """:func:`embed_images` through an exported embedding model (facecls.inference.runners.Runner:
    uint8 images in, the un-normalised embedding out — the normalisation is inside the file)."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        emb = runner(batch).float()
        if flip:
            emb = emb + runner(batch.flip(-1)).float()
        out.append(F.normalize(emb, dim=1))
    return torch.cat(out) if out else torch.empty(0, 0)


def embed_split(model: nn.Module, split, prepare: Callable, settings: EvalSettings, flip: bool = False) -> torch.Tensor:
    """:func:`embed_images` of a data split (``split.inputs``; rows line up with ``split.labels``
    and ``split.files``). The whole split is embedded in this process (no DDP sharding)."""
    return embed_images(model, split.inputs, prepare, settings, flip)

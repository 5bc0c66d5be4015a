"""Turn slices of the in-memory split into model input on the device.

Batches are index slices of a uint8 tensor; conversion to float, augmentation and
normalisation happen per batch on the device (GPU when there is one).
"""
from __future__ import annotations

import math
from typing import Iterator

import torch

from facecls.data.decode import Preprocess


def shard_indices(order: torch.Tensor, rank: int, world_size: int, pad: bool) -> torch.Tensor:
    """This rank's share of ``order``: every ``world_size``-th index starting at ``rank``.

    ``pad`` (training) first repeats indices from the start until the length divides by
    ``world_size``, so every rank runs the same number of steps, as DistributedSampler
    does. Without it (evaluation) no image is counted twice and shares differ by at most one.
    """
    if pad and len(order) % world_size:
        total = math.ceil(len(order) / world_size) * world_size
        order = order.repeat(math.ceil(total / max(len(order), 1)))[:total]
    return order[rank::world_size]


def iterate_batches(split, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                    rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (inputs, labels) slices; a seeded ``generator`` fixes the shuffled order.

    With ``world_size`` > 1 (DDP) only this rank's share is yielded, see
    :func:`shard_indices`: shuffled (training) shares are padded to one
    length so every rank runs the same number of steps; unshuffled (evaluation) ones are not.
    """
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else None
    if world_size > 1:
        order = shard_indices(torch.arange(n) if order is None else order, rank, world_size, pad=shuffle)
        n = len(order)
    for start in range(0, n, batch_size):
        if order is None:
            yield split.inputs[start:start + batch_size], split.labels[start:start + batch_size]
        else:
            index = order[start:start + batch_size]
            yield split.inputs[index], split.labels[index]


class BatchPreparer:
    """uint8 images → normalised float model input on ``device``.

    ``augment`` (a torchvision.transforms.v2 transform) is applied to each image on its own
    so every image gets its own random parameters (v2 on a whole batch would draw one set
    of parameters for all of them). Float inputs (cached features) pass through unchanged.
    """

    def __init__(self, prep: Preprocess, device: torch.device, augment=None, channels_last: bool = False):
        self.device = device
        self.augment = augment
        self.channels_last = channels_last
        mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)
        # (x/255 - mean)/std folded into one multiply-add
        self.scale = 1.0 / (255.0 * std)
        self.shift = mean / std

    def __call__(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        if self.device.type == "cuda" and x.device.type == "cpu":
            # page-locked memory: the copy below runs asynchronously (non_blocking) with the GPU
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        if x.dtype != torch.uint8:
            return x
        if train and self.augment is not None:
            x = torch.stack([self.augment(image) for image in x])
        if self.channels_last:
            # reorder the uint8 batch (a quarter of the float bytes); float() keeps the layout
            x = x.contiguous(memory_format=torch.channels_last)
        return x.float().mul_(self.scale).sub_(self.shift)


def build_transform(transforms_cfg):
    """A list of `_target_` configs (torchvision.transforms.v2 classes) → one v2.Compose.
    An empty/absent list → None (nothing to apply)."""
    if not transforms_cfg:
        return None
    from hydra.utils import instantiate
    from torchvision.transforms import v2

    return v2.Compose([instantiate(t) for t in transforms_cfg])

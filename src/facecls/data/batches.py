"""Turn slices of the in-memory split into model input on the device.

Batches are index slices of a uint8 tensor; conversion to float, augmentation and
normalisation happen per batch on the device (GPU when there is one). Augmentation is
batched (facecls.data.augment: the whole batch in a few calls, each image with its own
random parameters) unless the recipe holds a per-image (torchvision.transforms.v2) transform.
"""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Iterator

import torch
from hydra.utils import instantiate

from facecls.data.augment import BATCHED_VERSIONS, BatchTransform, Compose
from facecls.data.preprocess import Preprocess

log = logging.getLogger(__name__)


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
                    rank: int = 0, world_size: int = 1,
                    balanced: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (inputs, labels) slices; a seeded ``generator`` fixes the shuffled order.

    ``balanced`` (with ``shuffle``, data.sampler=balanced): an epoch draws as many images as
    the split holds, with replacement, each class equally likely — small classes repeat,
    large ones are subsampled.

    With ``world_size`` > 1 (DDP) only this rank's share is yielded, see
    :func:`shard_indices`: shuffled (training) shares are padded to one
    length so every rank runs the same number of steps; unshuffled (evaluation) ones are not.
    """
    n = len(split)
    if shuffle and balanced:
        order = torch.multinomial(class_balanced_weights(split.labels), n, replacement=True, generator=generator)
    else:
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


def class_balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per image: 1 / (images of its class), so every class has the same total weight."""
    counts = torch.bincount(labels)
    return 1.0 / counts[labels].double()


class BatchPreparer:
    """uint8 images → normalised float model input on ``device``.

    ``augment`` (train time only) is either a batched augmenter
    (:class:`facecls.data.augment.BatchTransform`, see :func:`build_transform`), applied to
    the whole float batch in [0, 1] at once with its own random parameters per image, or a
    per-image transform (torchvision.transforms.v2) applied to each uint8 image on its own
    (v2 on a whole batch would draw one set of parameters for all of them). Float inputs
    (cached features) pass through unchanged.

    On the CPU a batch is prepared with ``threads`` torch threads (default 1, None: torch's
    setting): these are a few memory-bound passes over the batch, and with several intra-op
    threads every operation waits for its slowest thread — a whole scheduler slice when
    another process busies the cores (64×3×64×64 with aug=basic: ~10 ms on one thread,
    ~190 ms on two busy cores). The values are the same either way.
    """

    def __init__(self, prep: Preprocess, device: torch.device, augment=None, channels_last: bool = False,
                 threads: int | None = 1):
        self.device = device
        self.augment = augment
        self.batched = isinstance(augment, BatchTransform)
        self.channels_last = channels_last
        self.threads = threads
        mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)
        # (x/255 - mean)/std folded into one multiply-add
        self.scale = 1.0 / (255.0 * std)
        self.shift = mean / std
        # the same for a batch already in [0, 1] (after batched augmentation)
        self.unit_scale = 1.0 / std

    def __call__(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        if self.device.type == "cuda" and x.device.type == "cpu":
            # page-locked memory: the copy below runs asynchronously (non_blocking) with the GPU
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        if x.dtype != torch.uint8:
            return x
        with _cpu_threads(self.threads if x.device.type == "cpu" else None):
            return self._prepare(x, train)

    def _prepare(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        if train and self.augment is not None:
            if self.batched:
                x = self.augment(x.float().mul_(1.0 / 255.0))
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                return x.mul_(self.unit_scale).sub_(self.shift)
            x = torch.stack([self.augment(image) for image in x])
        if self.channels_last:
            # reorder the uint8 batch (a quarter of the float bytes); float() keeps the layout
            x = x.contiguous(memory_format=torch.channels_last)
        return x.float().mul_(self.scale).sub_(self.shift)


@contextmanager
def _cpu_threads(threads: int | None):
    """torch's intra-op threads set to ``threads`` inside the block (None: unchanged)."""
    before = torch.get_num_threads()
    if not threads or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_transform(transforms_cfg, explain: bool = True):
    """A list of `_target_` configs → the train-time augmenter; an empty/absent list → None.

    When every class in the list is batched (facecls.data.augment), the result is one
    :class:`~facecls.data.augment.Compose` that augments a whole batch at once, every image
    with its own random parameters. When any is a per-image transform (torchvision.transforms.v2
    or another callable on one 3×H×W uint8 image), the result is a v2.Compose run one image
    at a time (batched classes in it are wrapped to take one image) and, with ``explain``,
    one log line says which transforms cause that and what it costs.
    """
    if not transforms_cfg:
        return None

    transforms = [instantiate(t) for t in transforms_cfg]
    if all(isinstance(t, BatchTransform) for t in transforms):
        return Compose(transforms)

    if explain:
        per_image = [type(t) for t in transforms if not isinstance(t, BatchTransform)]
        names = ", ".join(dict.fromkeys(_class_name(c) for c in per_image))
        batched = ", ".join(dict.fromkeys(f"facecls.data.augment.{BATCHED_VERSIONS[c.__name__]}" for c in per_image
                                          if c.__name__ in BATCHED_VERSIONS))
        log.info(f"Augmentation runs one image at a time: {names} cannot run batched (roughly 1 ms more per image "
                 "on a CPU: +2 s per epoch of 2,000 images, several times that on busy cores)"
                 + (f"; batched versions: {batched}." if batched else "."))
    from torchvision.transforms import v2  # deferred: `import torchvision` loads its whole model zoo

    return v2.Compose([_OneImage(t) if isinstance(t, BatchTransform) else t for t in transforms])


def _class_name(cls: type) -> str:
    """torchvision.transforms.v2.RandomAffine rather than torchvision.transforms.v2._geometry.RandomAffine."""
    module = cls.__module__
    if module.startswith("torchvision.transforms.v2"):
        module = "torchvision.transforms.v2"
    return f"{module}.{cls.__qualname__}"


class _OneImage:
    """A batched transform applied to one 3×H×W image (for a list that runs per image)."""

    def __init__(self, transform: BatchTransform):
        self.transform = transform

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype == torch.uint8:
            out = self.transform(image.unsqueeze(0).float().mul_(1.0 / 255.0))[0]
            return out.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return self.transform(image.unsqueeze(0))[0]

    def __repr__(self) -> str:
        return f"OneImage({self.transform!r})"

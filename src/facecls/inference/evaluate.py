"""Score a model over a split without training it: mean loss, accuracy, and optionally every
prediction and probability. Training's validation and test passes and every inference command
go through :func:`evaluate`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import nn

from facecls.data.batches import iterate_batches
from facecls.inference.device import autocast


class Shard(Protocol):
    """This process's share of a split (training.distributed.DistContext under DDP)."""

    rank: int
    world_size: int

    def sum(self, *values: float) -> list[float]: ...


@dataclass(frozen=True)
class OneProcess:
    """The whole split in this process: nothing to all-reduce."""

    rank: int = 0
    world_size: int = 1

    def sum(self, *values: float) -> list[float]:
        return list(values)


@dataclass
class EvalSettings:
    """How to run a model over a split without training it."""

    device: torch.device
    batch_size: int = 256
    amp: bool = False
    progress: bool | None = None  # None: bars only on a terminal
    dist: Shard = field(default_factory=OneProcess)  # DDP: each rank scores its share, the sums are all-reduced

    def autocast(self):
        return autocast(self.device, self.amp)


@torch.inference_mode()
def evaluate(net: nn.Module, split, prepare: Callable, settings: EvalSettings,
             return_predictions: bool = False, return_probabilities: bool = False):
    """Mean loss and accuracy over a split (and optionally every prediction and its probability;
    ``return_probabilities`` adds the whole softmax N×C as ``probabilities``, for per-class and
    calibration metrics). Under DDP each rank scores its share and the sums are all-reduced
    (not with predictions: those need every image in this process)."""
    return_predictions = return_predictions or return_probabilities
    was_training = net.training
    net.eval()
    dist = OneProcess() if return_predictions else settings.dist
    total_loss, correct, count, preds, probs, full = 0.0, 0, 0, [], [], []
    for x, y in iterate_batches(split, settings.batch_size, rank=dist.rank, world_size=dist.world_size):
        y = y.to(settings.device, non_blocking=True)
        with settings.autocast():
            logits = net(prepare(x, train=False))
        logits = logits.float()
        total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        softmax = logits.softmax(1)
        p, pred = softmax.max(1)
        correct += (pred == y).sum().item()
        count += len(y)
        if return_predictions:
            preds.append(pred.cpu())
            probs.append(p.cpu())
            if return_probabilities:
                full.append(softmax.cpu())
    net.train(was_training)
    total_loss, correct, count = dist.sum(total_loss, correct, count)
    n = max(count, 1)
    result = {"loss": total_loss / n, "acc": correct / n}
    if return_predictions:
        result["predictions"] = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
        result["confidence"] = torch.cat(probs) if probs else torch.empty(0)
    if return_probabilities:
        result["probabilities"] = torch.cat(full) if full else torch.empty(0, 0)
    return result

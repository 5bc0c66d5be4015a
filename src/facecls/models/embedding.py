"""The embedding neck: what replaces a model's class layer when ``model.embedding_dim`` is set.

ArcFace's models end in BatchNorm → (dropout) → Linear → BatchNorm1d on the embedding
(insightface's iresnet ``bn2``/``fc``/``features``). The same shape here, on the flat features
that would have fed the class layer: BatchNorm1d(width) → Linear(width, D) → BatchNorm1d(D).
The last BatchNorm keeps every embedding coordinate centred and of one scale, which is what a
cosine between embeddings compares; the margin head (facecls.training.losses) normalises the
embedding itself. The class logits of an embedding model come from the loss head during
training only, so the model saved for verify/enroll/export ends at the embedding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facecls.errors import UserError


class _BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that accepts a training batch of one image (a split whose size leaves one
    image for the last batch): that batch is normalised with the running statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class EmbeddingNeck(nn.Sequential):
    """BatchNorm1d(width) → Linear(width, D) → BatchNorm1d(D), on flattened features."""

    def __init__(self, width: int, embedding_dim: int):
        super().__init__(nn.Flatten(), _BatchNorm(width), nn.Linear(width, embedding_dim), _BatchNorm(embedding_dim))
        self.embedding_dim = embedding_dim


def check_embedding_dim(value) -> int | None:
    """``model.embedding_dim`` as an int (None: a classifier); a one-line error when invalid."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"model.embedding_dim={value} is invalid — give a whole number >= 1 (128 for small "
                        "nets, 512 for backbones) or null for a classifier.")
    return value


def output_layer(width: int, num_classes: int, embedding_dim: int | None, classifier: nn.Module | None = None):
    """The model's last layer: ``classifier`` (default: Linear(width, num_classes)) for a
    classifier, an :class:`EmbeddingNeck` when ``embedding_dim`` is set."""
    if embedding_dim is None:
        return classifier if classifier is not None else nn.Linear(width, num_classes)
    return EmbeddingNeck(width, embedding_dim)

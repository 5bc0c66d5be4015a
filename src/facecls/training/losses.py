"""Margin heads for face embeddings: ArcFace (Deng et al. 2019) and CosFace (Wang et al. 2018).

A head holds one centre per training identity (the rows of ``weight``) and turns embeddings into
logits ``s * cos(θ_j)`` against every centre, with a margin taken off the true class's logit
only; cross-entropy on these logits then pulls each embedding towards its own centre by more
than a plain softmax would, which is what makes distances between *unseen* people meaningful.

The head is used only while training: verify, enroll, export and serve use the embedding model
alone. The cosines are computed in float32 even under autocast, because cos θ near ±1 and the
scale s = 64 leave no room for float16/bfloat16 rounding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from facecls.errors import UserError


class MarginHead(nn.Module):
    """The shared part: class centres, cosines, and the target-logit replacement.

    Args:
        embedding_dim: width of the embeddings the model produces.
        num_classes: training identities (one centre each).
        margin: the margin m (radians for ArcFace, cosine units for CosFace).
        scale: the logit scale s applied to every cosine.
    """

    def __init__(self, embedding_dim: int, num_classes: int, margin: float, scale: float):
        super().__init__()
        if embedding_dim < 1 or num_classes < 2:
            raise UserError(f"a margin loss needs embedding_dim >= 1 and >= 2 classes, got {embedding_dim} and "
                            f"{num_classes} — set model.embedding_dim and use data with several people.")
        if not (margin >= 0 and scale > 0 and math.isfinite(margin) and math.isfinite(scale)):
            raise UserError(f"loss.margin={margin}, loss.scale={scale}: the margin must be >= 0 and the scale > 0 "
                            "— e.g. loss.margin=0.5 loss.scale=64.")
        self.embedding_dim, self.num_classes = embedding_dim, num_classes
        self.margin, self.scale = float(margin), float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_normal_(self.weight)

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, margin={self.margin}, "
                f"scale={self.scale}")

    def raw_cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """cos θ between each (normalised) embedding and each (normalised) centre, float32, in [-1, 1]."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))
        return cos.clamp(-1.0, 1.0)  # rounding can step just past ±1, where arccos-based formulas break

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Scaled cosines without any margin: the logits for accuracy and evaluation."""
        return self.scale * self.raw_cosine(embeddings)

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        """The margin-applied cosine for the true class (before scaling)."""
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled logits with the margin on each row's true class; pass them to cross-entropy."""
        cos = self.raw_cosine(embeddings)
        index = labels.long().view(-1, 1)
        target = self.target_logit(cos.gather(1, index))
        return self.scale * cos.scatter(1, index, target)


class ArcFace(MarginHead):
    """Additive angular margin: the true class's logit is s·cos(θ + m).

    cos(θ + m) stops decreasing once θ + m passes π, which would reward pushing an embedding
    further from its centre. As in insightface, when cos θ <= cos(π − m) (that is θ + m >= π) the
    logit is cos θ − m·sin(π − m) instead: it keeps falling as θ grows (insightface's ``mm`` term;
    it sits a little below cos(θ + m) at the switch, a step of about 0.12 for m = 0.5).
    """

    def __init__(self, embedding_dim: int, num_classes: int, margin: float = 0.5, scale: float = 64.0):
        super().__init__(embedding_dim, num_classes, margin, scale)
        self._cos_m, self._sin_m = math.cos(self.margin), math.sin(self.margin)
        self._threshold = math.cos(math.pi - self.margin)
        self._fallback = math.sin(math.pi - self.margin) * self.margin

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        # sin θ from cos θ; the clamp keeps the square root's gradient finite at cos θ = ±1 (its
        # gradient there is cut to zero rather than infinite, which torch.where would turn into NaN).
        sin = torch.sqrt((1.0 - cos * cos).clamp(min=1e-12))
        shifted = cos * self._cos_m - sin * self._sin_m  # cos(θ + m)
        return torch.where(cos > self._threshold, shifted, cos - self._fallback)


class CosFace(MarginHead):
    """Additive cosine margin (large margin cosine loss): the true class's logit is s·(cos θ − m)."""

    def __init__(self, embedding_dim: int, num_classes: int, margin: float = 0.35, scale: float = 64.0):
        super().__init__(embedding_dim, num_classes, margin, scale)

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        return cos - self.margin

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
from hydra.utils import get_class
from torch import nn

from facecls.config.instantiate import instantiate
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

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The evaluation logits (no margin): :meth:`cosine`."""
        return self.cosine(embeddings)

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


class LinearHead(nn.Module):
    """``loss=cross_entropy`` on an embedding model: a plain linear layer from the embedding to
    the training classes (softmax cross-entropy, no margin) — the embedding model's own
    baseline. ``labels`` are accepted and ignored, so the loop treats every head alike."""

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(embedding_dim, num_classes)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.linear(embeddings)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(embeddings)


class WithLossHead(nn.Module):
    """What trains when a model ends in an embedding: the model (or its training view, e.g. a
    frozen backbone's head on cached features) followed by the loss head, as ONE module — so one
    DDP wrapper all-reduces both gradients, one optimizer steps both, one EMA averages both.

    ``forward(x, labels)`` in training mode gives the margin logits the loss needs;
    ``forward(x)`` (evaluation) the head's plain logits; ``embed(x)`` the embedding.
    Checkpoints save ``body`` as the model and ``head`` apart (``Checkpoint.loss_head``)."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.body(x)
        if labels is None or not self.training:
            return self.head.logits(emb)
        return self.head(emb, labels)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


# Keys of the loss group that configure the criterion (cross-entropy on the head's logits), not the head.
CRITERION_KEYS = ("label_smoothing", "class_weights")


def build_loss_head(loss_cfg, embedding_dim: int | None, num_classes: int) -> nn.Module | None:
    """The loss head the ``loss`` group names, for a model with ``embedding_dim`` (None: a
    classifier, whose own logits need no head — only a plain cross-entropy can train it).

    Args:
        loss_cfg: the ``loss`` node (``_target_`` a head class; its other keys its arguments,
            except :data:`CRITERION_KEYS`); None = cross-entropy.
        embedding_dim: the model's ``embedding_dim``.
        num_classes: training identities.
    """
    target = loss_cfg.get("_target_") if loss_cfg else None
    cls = get_class(target) if target else LinearHead
    if embedding_dim is None:
        if issubclass(cls, MarginHead):
            name = target.rsplit(".", 1)[-1].lower()
            raise UserError(f"loss={name} needs a model that ends in an embedding — set model.embedding_dim "
                            "(e.g. model.embedding_dim=128), or use loss=cross_entropy for a classifier.")
        return None
    args = {k: v for k, v in (loss_cfg or {}).items() if k != "_target_" and k not in CRITERION_KEYS}
    return instantiate({"_target_": target or f"{LinearHead.__module__}.LinearHead", **args},
                       what=f"loss {target}", embedding_dim=int(embedding_dim), num_classes=int(num_classes))

"""A frozen torchvision (or timm) backbone cut at any node, feeding a trainable FC head (``model=feature_extractor``).

The general form of the report's section 2.2 for every classifier torchvision lists (or timm,
with ``model.source=timm``): the
backbone ``model.name`` with ``model.weights``, cut at ``model.cut`` (a graph node, a module
such as ``layer3``, an alias, or ``penultimate`` = the classifier's input), optionally
average-pooled (``model.pool``), frozen and always in eval mode. Without train-time
augmentation its features are computed once per split and cached
(:mod:`facecls.data.features`), so the epochs train the head alone.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

from facecls.config.checks import check_dropout
from facecls.models.backbone_graph import PENULTIMATE, cut_network, output_shape
from facecls.models.backbones import build_network, preprocess_of
from facecls.models.base import FaceModel
from facecls.models.embedding import check_embedding_dim
from facecls.models.transfer import FrozenBackbone, fc_head

log = logging.getLogger(__name__)


class TorchvisionModel(FaceModel):
    """Preprocessing from the chosen weights' ``transforms()`` (timm: their ``pretrained_cfg``;
    also for random init, so runs compare)."""

    @classmethod
    def preprocess(cls, model_cfg):
        return preprocess_of(str(model_cfg["name"]), model_cfg.get("weights"), model_cfg.get("input_size"),
                             model_cfg.get("source"))


class FeatureExtractor(FrozenBackbone, TorchvisionModel):
    """Frozen ``name`` up to ``cut`` (→ global average pool) → FC ``head`` sizes → classes (or, with
    ``embedding_dim``, the embedding neck; it trains on the cached features like a class layer)."""

    def __init__(self, num_classes: int, name: str = "resnet18", weights: str | None = "DEFAULT",
                 cut: str = PENULTIMATE, pool: str = "avg", head: Sequence[int] = (), dropout: float = 0.0,
                 pretrained: bool = True, weights_path: str | None = None, input_size: int | None = None,
                 cache_features: bool = True, source: str = "torchvision", embedding_dim: int | None = None):
        super().__init__()
        p = check_dropout(dropout)
        own = self.preprocess({"name": name, "weights": weights, "input_size": None, "source": source}).size
        size = self.preprocess({"name": name, "weights": weights, "input_size": input_size, "source": source}).size
        net = build_network(name, weights, pretrained, weights_path, size, source)  # ViT: built for size×size
        self.backbone = cut_network(net, name, str(cut), str(pool), source)
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.name, self.weights, self.cut, self.pool = name, weights if pretrained else None, str(cut), str(pool)
        self.source = str(source)
        self.cache_features = bool(cache_features)
        self.feature_shape = output_shape(self.backbone, size, own, f"{name} up to {cut}")
        self.embedding_dim = check_embedding_dim(embedding_dim)
        self.head = fc_head(math.prod(self.feature_shape), head, p, num_classes,  # the head follows the cut
                            self.embedding_dim)

    def feature_identity(self) -> dict:
        identity = {"model": self.name, "weights": str(self.weights), "cut": self.cut, "node": self.backbone.node,
                    "pool": self.pool}
        if self.source != "torchvision":  # torchvision runs keep the keys (and caches) they had
            identity["source"] = self.source
        return identity

"""A frozen torchvision backbone cut at any node, feeding a trainable FC head (``model=feature_extractor``).

The general form of the report's section 2.2 for every classifier torchvision lists: the
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

import torch
from torch import nn

from facecls.config.checks import check_dropout
from facecls.models.backbones import PENULTIMATE, build_network, cut_network, init_linear, output_shape, preprocess_of
from facecls.models.base import FaceModel, TrainingView

log = logging.getLogger(__name__)


class TorchvisionModel(FaceModel):
    """Preprocessing from the chosen weights' ``transforms()`` (also for random init, so runs compare)."""

    @classmethod
    def preprocess(cls, model_cfg):
        return preprocess_of(str(model_cfg["name"]), model_cfg.get("weights"), model_cfg.get("input_size"))


def fc_head(width: int, head: Sequence[int], p: float, num_classes: int) -> nn.Sequential:
    """Flatten → (Linear → ReLU → Dropout) per ``head`` size → Linear to the classes, Kaiming init."""
    layers: list[nn.Module] = [nn.Flatten()]
    for hidden in head:
        layers += [init_linear(nn.Linear(width, int(hidden))), nn.ReLU(inplace=True)]
        if p > 0:
            layers.append(nn.Dropout(p))
        width = int(hidden)
    layers.append(init_linear(nn.Linear(width, num_classes)))
    return nn.Sequential(*layers)


class FeatureExtractor(TorchvisionModel):
    """Frozen ``name`` up to ``cut`` (→ global average pool) → FC ``head`` sizes → classes."""

    def __init__(self, num_classes: int, name: str = "resnet18", weights: str | None = "DEFAULT",
                 cut: str = PENULTIMATE, pool: str = "avg", head: Sequence[int] = (), dropout: float = 0.0,
                 pretrained: bool = True, weights_path: str | None = None, input_size: int | None = None,
                 cache_features: bool = True):
        super().__init__()
        p = check_dropout(dropout)
        net = build_network(name, weights, pretrained, weights_path)
        self.backbone = cut_network(net, name, str(cut), str(pool))
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.name, self.weights, self.cut, self.pool = name, weights if pretrained else None, str(cut), str(pool)
        self.cache_features = bool(cache_features)
        own = self.preprocess({"name": name, "weights": weights, "input_size": None}).size
        size = self.preprocess({"name": name, "weights": weights, "input_size": input_size}).size
        self.feature_shape = output_shape(self.backbone, size, own, f"{name} up to {cut}")
        self.head = fc_head(math.prod(self.feature_shape), head, p, num_classes)  # the head follows the cut

    def train(self, mode: bool = True):
        """Train the head only: the frozen backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_view(self, data, prepare, features, augmented: bool) -> TrainingView:
        """Without train-time augmentation the backbone runs once per split and the head trains
        on its features; the checkpoint still saves this whole model, so it scores images."""
        if augmented:
            log.info("Feature cache off: train-time augmentation (aug) changes every image each "
                     "epoch, so the frozen backbone runs on every batch.")
            return TrainingView(self, data, prepare)
        if not self.cache_features:
            log.info("Feature cache off (model.cache_features=false): the backbone runs on every batch.")
            return TrainingView(self, data, prepare)
        identity = {"model": self.name, "weights": str(self.weights), "cut": self.cut, "node": self.backbone.node,
                    "pool": self.pool}
        return TrainingView(self.head, features.features(self.backbone, data, prepare, identity), prepare)

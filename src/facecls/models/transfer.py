"""What the transfer-learning models share (AlexNet's presets and the general torchvision
ones): the report's FC head, a frozen backbone with its feature cache, and the learning-rate
groups of a finetuned network."""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from facecls.models.base import FaceModel, TrainingView
from facecls.models.embedding import EmbeddingNeck


def init_linear(layer: nn.Linear) -> nn.Linear:
    """Kaiming-uniform weights and zero bias, as the report's AlexNet heads."""
    nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    nn.init.zeros_(layer.bias)
    return layer


def fc_head(width: int, head: Sequence[int], p: float, num_classes: int,
            embedding_dim: int | None = None) -> nn.Sequential:
    """Flatten → (Linear → ReLU → Dropout) per ``head`` size → Linear to the classes, Kaiming init
    (with ``embedding_dim``: → the embedding neck instead of the class layer)."""
    layers: list[nn.Module] = [nn.Flatten()]
    for hidden in head:
        layers += [init_linear(nn.Linear(width, int(hidden))), nn.ReLU(inplace=True)]
        if p > 0:
            layers.append(nn.Dropout(p))
        width = int(hidden)
    if embedding_dim is None:
        layers.append(init_linear(nn.Linear(width, num_classes)))
    else:
        neck = EmbeddingNeck(width, embedding_dim)
        init_linear(neck[2])
        layers.append(neck)
    return nn.Sequential(*layers)


class FrozenBackbone(FaceModel):
    """A frozen ``self.backbone`` (always in eval mode) feeding a trainable ``self.head``.
    Subclasses build both, set ``self.cache_features`` and say what identifies their
    features in :meth:`feature_identity` (the feature cache's key)."""

    backbone: nn.Module
    head: nn.Module
    cache_features: bool = True

    def feature_identity(self) -> dict:
        raise NotImplementedError

    def train(self, mode: bool = True):
        """Train the head only: the frozen backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_view(self, data, prepare, features, augmented: bool) -> TrainingView:
        """Without train-time augmentation the backbone runs once per split and the head
        trains on its features; the checkpoint still saves this whole model, so it scores
        images directly."""
        log = logging.getLogger(type(self).__module__)  # the concrete model's logger
        if augmented:
            log.info("Feature cache off: train-time augmentation (aug) changes every image each "
                     "epoch, so the frozen backbone runs on every batch.")
            return TrainingView(self, data, prepare)
        if not self.cache_features:
            log.info("Feature cache off (model.cache_features=false): the backbone runs on every batch.")
            return TrainingView(self, data, prepare)
        # Float inputs pass through the BatchPreparer unchanged (only moved to the device).
        return TrainingView(self.head, features.features(self.backbone, data, prepare, self.feature_identity()),
                            prepare)


def head_and_backbone_groups(model: nn.Module, head: nn.Module, lr: float, backbone_lr_mult: float) -> list[dict]:
    """The new classifier at ``lr`` (first, so history.csv's lr column shows it), the trainable
    rest at ``lr × backbone_lr_mult``; frozen parameters are left out."""
    head_params = list(head.parameters())
    head_ids = {id(p) for p in head_params}
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": head_params, "lr": lr}]
    if backbone:
        groups.append({"params": backbone, "lr": lr * backbone_lr_mult})
    return groups


def layer_decay_groups(net: nn.Module, head: nn.Module, stages: list[tuple[str, list[str]]], backbone_lr: float,
                       decay: float, lr: float) -> list[dict]:
    """Layer-wise LR decay (timm's ``--layer-decay``, BEiT/ELECTRA): the new classifier at ``lr``
    (first group), the backbone's last stage at ``backbone_lr × decay``, the one before at
    ``backbone_lr × decay²``, …; frozen parameters and empty stages are left out. Each group
    carries its ``stage`` name for logs and tests."""
    groups = [{"params": list(head.parameters()), "lr": lr}]
    for depth, (stage, names) in enumerate(reversed(stages), start=1):
        params = [net.get_parameter(n) for n in names if net.get_parameter(n).requires_grad]
        if params:
            groups.append({"params": params, "lr": backbone_lr * decay ** depth,
                           "stage": stage or "(model)"})
    return groups

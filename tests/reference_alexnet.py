"""The AlexNet classes facecls had before model=alexnet_feature / alexnet_finetune became presets of
the general models (src/facecls/models/alexnet.py at commit fe8467e, unchanged but for the
``**_preset_options`` each __init__ now ignores: the presets' name/weights/pool).

Only the parity tests in test_alexnet.py use them, as the reference the presets must match
exactly (history.csv on a fixed seed) — they run as ``model._target_=reference_alexnet.…``
with tests/ on PYTHONPATH.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
from torch import nn
from torchvision.models import AlexNet_Weights, alexnet

from facecls.config.checks import check_dropout
from facecls.errors import UserError
from facecls.models.base import FaceModel
from facecls.models.pretrained import load_pretrained, weights_preprocess
from facecls.models.transfer import FrozenBackbone, fc_head, head_and_backbone_groups, init_linear

log = logging.getLogger(__name__)

WEIGHTS = AlexNet_Weights.IMAGENET1K_V1
# Feature cut → number of torchvision `features` layers it keeps (a conv cut ends after its ReLU).
CUT_LAYERS = {"conv1": 2, "conv2": 5, "conv3": 8, "conv4": 10, "conv5": 12, "pool5": 13}
# Block → the torchvision module holding its weights, in network order (freeze=X freezes X and all before).
BLOCKS = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.8",
          "conv5": "features.10", "fc6": "classifier.1", "fc7": "classifier.4"}
NEW_LAYER = "classifier.6"  # the 1000-way ImageNet layer, replaced by one for our classes


def torchvision_alexnet(pretrained: bool, weights_path: str | None) -> nn.Module:
    """torchvision's AlexNet, with ImageNet weights when ``pretrained`` (see pretrained.py)."""
    if weights_path and not pretrained:
        raise UserError(f"model.weights_path={weights_path} is set but model.pretrained=false — "
                        "drop one of them (weights_path loads pretrained weights).")
    net = alexnet(weights=None)
    if pretrained:
        load_pretrained(net, WEIGHTS, weights_path)
    return net


def output_shape(module: nn.Module, input_size: int, what: str) -> tuple[int, ...]:
    """Shape of ``module``'s output for one input_size² image (a too-small input → UserError)."""
    try:
        with torch.no_grad():
            shape = tuple(module(torch.zeros(1, 3, input_size, input_size)).shape[1:])
    except RuntimeError:
        shape = (0,)
    if math.prod(shape) == 0:
        raise UserError(f"model.input_size={input_size} is too small for AlexNet up to {what} — use "
                        "model.input_size >= 63, or null for the weights' own 224.")
    return shape


class _AlexNet(FaceModel):
    @classmethod
    def preprocess(cls, model_cfg):
        """ImageNet preprocessing from the weights, also with pretrained=false, so runs compare."""
        return weights_preprocess(WEIGHTS, model_cfg.get("input_size"))


class AlexNetFeature(FrozenBackbone, _AlexNet):
    """Frozen AlexNet up to ``cut`` → flatten → FC ``head`` sizes (ReLU, dropout) → classes."""

    def __init__(self, num_classes: int, cut: str = "conv4", head: Sequence[int] = (4096, 4096),
                 dropout: float = 0.0, pretrained: bool = True, weights_path: str | None = None,
                 input_size: int | None = None, cache_features: bool = True, **_preset_options):
        super().__init__()
        if cut not in CUT_LAYERS:
            raise UserError(f"unknown model.cut '{cut}' — choose one of: {', '.join(CUT_LAYERS)}.")
        p = check_dropout(dropout)
        net = torchvision_alexnet(pretrained, weights_path)
        layers = list(net.features)[:CUT_LAYERS[cut]] + ([net.avgpool] if cut == "pool5" else [])
        self.backbone = nn.Sequential(*layers)
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.cut, self.cache_features = cut, bool(cache_features)
        size = self.preprocess({"input_size": input_size}).size
        self.feature_shape = output_shape(self.backbone, size, cut)

        self.head = fc_head(math.prod(self.feature_shape), head, p, num_classes)  # the head follows the cut

    def feature_identity(self) -> dict:
        return {"cut": self.cut}


class AlexNetFinetune(_AlexNet):
    """The whole AlexNet with a new last layer; blocks up to ``freeze`` fixed; the backbone
    learns at ``backbone_lr_mult`` × the optimizer's learning rate."""

    def __init__(self, num_classes: int, freeze: str | None = None, backbone_lr_mult: float = 1.0,
                 dropout: float = 0.5, pretrained: bool = True, weights_path: str | None = None,
                 input_size: int | None = None, **_preset_options):
        super().__init__()
        if freeze is not None and freeze not in BLOCKS:
            raise UserError(f"unknown model.freeze '{freeze}' — choose one of: {', '.join(BLOCKS)} "
                            "(or null to train every layer).")
        if isinstance(backbone_lr_mult, bool) or not float(backbone_lr_mult) > 0:
            raise UserError(f"model.backbone_lr_mult={backbone_lr_mult} is invalid — use a number > 0 "
                            "(to keep the whole backbone fixed use model.freeze=fc7).")
        p = check_dropout(dropout)
        net = torchvision_alexnet(pretrained, weights_path)
        # Same attribute names as torchvision, so the state_dict keeps torchvision's format.
        self.features, self.avgpool, self.classifier = net.features, net.avgpool, net.classifier
        self.classifier[0].p = self.classifier[3].p = p
        self.classifier[6] = init_linear(nn.Linear(self.classifier[6].in_features, num_classes))
        self.backbone_lr_mult = float(backbone_lr_mult)
        self.frozen = list(BLOCKS)[:list(BLOCKS).index(freeze) + 1] if freeze else []
        for block in self.frozen:
            self.get_submodule(BLOCKS[block]).requires_grad_(False)
        output_shape(nn.Sequential(self.features, self.avgpool),
                     self.preprocess({"input_size": input_size}).size, "pool5")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)

    def param_groups(self, lr: float) -> list[dict]:
        return head_and_backbone_groups(self, self.get_submodule(NEW_LAYER), lr, self.backbone_lr_mult)

"""Finetuning any torchvision (or timm: ``model.source=timm``) classifier with a new last layer (``model=finetune``).

The general form of the report's section 2.4: the whole ``model.name`` trains with its
classifier — the last ``nn.Linear`` of its traced graph, found generically (timm: its
``get_classifier()``) — replaced by one for our classes. ``model.freeze=<node or module>``
keeps that node and every parameter used before it (in forward order) fixed, and the rest
of the backbone learns at ``model.backbone_lr_mult`` × the learning rate. With
``model.embedding_dim`` the embedding neck (:mod:`facecls.models.embedding`) takes the
classifier's place and learns at the full learning rate as the classifier would.

Staged fine-tuning (fastai's ``fine_tune``, timm's ``--layer-decay``): ``model.freeze_epochs=N``
trains the new layer alone for N epochs (the backbone gets no gradient and its BatchNorm
statistics stay as they are), then the whole network; ``model.layer_decay=d`` gives the
backbone's last stage (:func:`facecls.models.backbone_graph.stages`) the LR × d, the one before × d², ….
"""
from __future__ import annotations

import torch
from torch import nn

from facecls.config.checks import check_dropout
from facecls.errors import UserError
from facecls.models.backbone_graph import (
    classifier_node,
    graph_nodes,
    output_shape,
    parameters_up_to,
    resolve_node,
    stages,
)
from facecls.models.backbones import build_network
from facecls.models.embedding import EmbeddingNeck, check_embedding_dim
from facecls.models.feature_extractor import TorchvisionModel
from facecls.models.transfer import head_and_backbone_groups, init_linear, layer_decay_groups


class Finetune(TorchvisionModel):
    """``name`` with a new classifier; parameters up to ``freeze`` fixed; the backbone at
    ``backbone_lr_mult`` × the optimizer's learning rate."""

    def __init__(self, num_classes: int, name: str = "resnet18", weights: str | None = "DEFAULT",
                 freeze: str | None = None, backbone_lr_mult: float = 1.0, dropout: float | None = None,
                 pretrained: bool = True, weights_path: str | None = None, input_size: int | None = None,
                 source: str = "torchvision", embedding_dim: int | None = None, freeze_epochs: int = 0,
                 layer_decay: float | None = None):
        super().__init__()
        if isinstance(backbone_lr_mult, bool) or not float(backbone_lr_mult) > 0:
            raise UserError(f"model.backbone_lr_mult={backbone_lr_mult} is invalid — use a number > 0 "
                            "(to keep the whole backbone fixed use model=feature_extractor).")
        if isinstance(freeze_epochs, bool) or not isinstance(freeze_epochs, int) or freeze_epochs < 0:
            raise UserError(f"model.freeze_epochs={freeze_epochs} is invalid — use a whole number >= 0 "
                            "(epochs that train the new layer alone).")
        if layer_decay is not None and (isinstance(layer_decay, bool) or not 0 < float(layer_decay) <= 1):
            raise UserError(f"model.layer_decay={layer_decay} is invalid — use 0 < value <= 1 (e.g. 0.7), "
                            "or null for one backbone LR.")
        self.freeze_epochs, self.layer_decay = freeze_epochs, None if layer_decay is None else float(layer_decay)
        own = self.preprocess({"name": name, "weights": weights, "input_size": None, "source": source}).size
        size = self.preprocess({"name": name, "weights": weights, "input_size": input_size, "source": source}).size
        self.net = build_network(name, weights, pretrained, weights_path, size, source)  # ViT: built for size×size
        nodes = graph_nodes(self.net)
        self.classifier_name, old = classifier_node(self.net, nodes)
        self.embedding_dim = check_embedding_dim(embedding_dim)
        if isinstance(old, nn.Linear):
            width = old.in_features
            if self.embedding_dim is None:
                self.net.set_submodule(self.classifier_name, init_linear(nn.Linear(width, num_classes)))
        else:  # a timm model whose weights come without a head (nn.Identity): timm makes one
            self.net.reset_classifier(num_classes)
            self.classifier_name, new = classifier_node(self.net, nodes)
            width = init_linear(new).in_features
        if self.embedding_dim is not None:  # the embedding neck takes the classifier's place
            neck = EmbeddingNeck(width, self.embedding_dim)
            init_linear(neck[2])
            self.net.set_submodule(self.classifier_name, neck)
        if self.classifier_name not in nodes:  # timm's Linear is traced through (classifier.linear): retrace
            nodes = graph_nodes(self.net)
        if dropout is not None:  # null keeps the model's own dropout
            p = check_dropout(dropout)
            for module in self.net.modules():
                if isinstance(module, nn.Dropout):
                    module.p = p
        self.backbone_lr_mult = float(backbone_lr_mult)
        self.frozen: list[str] = []
        if freeze is not None:
            node = resolve_node(nodes, name, str(freeze), "model.freeze", source)
            self.frozen = parameters_up_to(self.net, nodes, node)
            if any(n.startswith(f"{self.classifier_name}.") for n in self.frozen):
                raise UserError(f"model.freeze={freeze} would freeze the new classifier too — freeze an earlier "
                                "node, or use model=feature_extractor for a fixed backbone.")
            for pname in self.frozen:
                self.net.get_parameter(pname).requires_grad_(False)
        self.stages = stages(self.net, nodes, self.classifier_name)  # forward order, the classifier left out
        self.staged: list[str] = []  # backbone parameters held fixed for now (the freeze_epochs stage)
        output_shape(self.net, size, own, name)

    def train(self, mode: bool = True):
        """Frozen normalisation layers keep their running statistics too (eval mode), so a frozen
        stage is exactly the pretrained one."""
        super().train(mode)
        frozen = set(self.frozen) | set(self.staged)
        for mname, module in self.net.named_modules():
            own = [f"{mname}.{p}" if mname else p for p, _ in module.named_parameters(recurse=False)]
            if getattr(module, "track_running_stats", False) and own and frozen.issuperset(own):
                module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def classifier_layer(self) -> nn.Module:
        """The new classifier (found in the traced graph, not by registration order)."""
        return self.net.get_submodule(self.classifier_name)

    def start_epoch(self, epoch: int) -> None:
        """Epochs 1…freeze_epochs train the new layer alone (the backbone's parameters get no
        gradient, so the optimizer leaves them and their moments alone); later ones everything
        ``model.freeze`` leaves trainable. Set from the epoch number alone, so a resume is exact."""
        if not self.freeze_epochs:
            return
        wanted = epoch <= self.freeze_epochs
        if wanted == bool(self.staged):
            return
        fixed = set(self.frozen)
        backbone = [p for _, names in self.stages for p in names if p not in fixed]
        self.staged = backbone if wanted else []
        for pname in backbone:
            self.net.get_parameter(pname).requires_grad_(not wanted)

    def param_groups(self, lr: float) -> list[dict]:
        head = self.net.get_submodule(self.classifier_name)
        if self.layer_decay is None:
            return head_and_backbone_groups(self, head, lr, self.backbone_lr_mult)
        return layer_decay_groups(self.net, head, self.stages, lr * self.backbone_lr_mult, self.layer_decay, lr)

"""The report's MLP (section 2.1): flatten → hidden layers with ReLU → classes (or, with
``embedding_dim``, the embedding neck of :mod:`facecls.models.embedding`)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from facecls.config.checks import check_dropout
from facecls.models.base import FaceModel
from facecls.models.embedding import check_embedding_dim, output_layer


class MLP(FaceModel):
    def __init__(self, num_classes: int, input_size: int = 28, hidden: Sequence[int] = (300,),
                 dropout: float = 0.0, in_channels: int = 3, embedding_dim: int | None = None):
        super().__init__()
        p = check_dropout(dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * input_size * input_size
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(inplace=True)]
            if p > 0:
                layers.append(nn.Dropout(p))
            width = int(h)
        self.embedding_dim = check_embedding_dim(embedding_dim)
        layers.append(output_layer(width, num_classes, self.embedding_dim))
        self.layers = nn.Sequential(*layers)
        for m in self.layers.modules():
            if isinstance(m, nn.Linear):  # the report: Kaiming-uniform weights
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

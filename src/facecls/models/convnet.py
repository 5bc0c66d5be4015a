"""The report's ConvNet (sections 1.2–1.6): conv blocks → flatten → FC layers → classes.

Every knob of the report's architecture experiments is an argument: depth and width
(``channels``), ``kernel_size``, ``stride``, ``padding`` (an int, or one value per conv),
max-pooling, FC sizes and dropout after flatten and before the last layer. With
``embedding_dim`` the class layer becomes the embedding neck (:mod:`facecls.models.embedding`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from facecls.config.checks import check_dropout
from facecls.errors import UserError
from facecls.models.base import FaceModel
from facecls.models.embedding import check_embedding_dim, output_layer


def _per_layer(value: int | Sequence[int], n: int, name: str) -> list[int]:
    values = [int(value)] * n if isinstance(value, int) else [int(v) for v in value]
    if len(values) != n:
        raise UserError(f"model.{name} has {len(values)} values for {n} conv layers — give one "
                        f"int or one value per entry of model.channels.")
    return values


class ConvNet(FaceModel):
    def __init__(self, num_classes: int, input_size: int = 64, channels: Sequence[int] = (16, 32),
                 kernel_size: int | Sequence[int] = 5, stride: int | Sequence[int] = 1,
                 padding: int | Sequence[int] = 0, pool: bool = False, pool_kernel: int = 2,
                 pool_stride: int = 2, fc: Sequence[int] = (128,), dropout: float = 0.0,
                 in_channels: int = 3, embedding_dim: int | None = None):
        super().__init__()
        n = len(channels)
        if n == 0:
            raise UserError("model.channels is empty — give at least one conv layer, e.g. [16,32].")
        kernels = _per_layer(kernel_size, n, "kernel_size")
        strides = _per_layer(stride, n, "stride")
        paddings = _per_layer(padding, n, "padding")
        p = check_dropout(dropout)

        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(channels):
            layers += [nn.Conv2d(c_in, int(c_out), kernels[i], strides[i], paddings[i]), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(pool_kernel, pool_stride))
            c_in = int(c_out)
        self.features = nn.Sequential(*layers)
        try:
            with torch.no_grad():
                flat = self.features(torch.zeros(1, in_channels, input_size, input_size)).numel()
        except RuntimeError:
            flat = 0
        if flat == 0:
            raise UserError(f"the conv layers shrink a {input_size}×{input_size} input to nothing — "
                            "use a larger model.input_size, or smaller kernel_size/stride, padding, "
                            "or fewer layers.")
        head: list[nn.Module] = [nn.Flatten(), nn.Dropout(p)]
        width = flat
        for hidden in fc:
            head += [nn.Linear(width, int(hidden)), nn.ReLU(inplace=True)]
            width = int(hidden)
        self.embedding_dim = check_embedding_dim(embedding_dim)
        head += [nn.Dropout(p), output_layer(width, num_classes, self.embedding_dim)]
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

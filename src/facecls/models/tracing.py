"""Module tracing: every module call of one forward pass, in order, with its input and output
shapes. The receptive-field table and the weight images find their layers this way, so they
follow the real forward order whatever the module tree looks like."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Traced:
    """One module call seen during the dummy forward pass."""

    name: str
    module: nn.Module
    input_shape: tuple | None
    output_shape: tuple | None


def trace_modules(model: nn.Module, example: torch.Tensor) -> list[Traced]:
    """Every module call of ``model(example)`` in forward order, with input/output shapes.

    Hooks are removed afterwards and the model's training mode is restored."""
    names = {m: n for n, m in model.named_modules()}
    calls: list[Traced] = []

    def shape(value):
        return tuple(value.shape) if isinstance(value, torch.Tensor) else None

    def hook(module, args, output):
        calls.append(Traced(names.get(module, "?"), module, shape(args[0]) if args else None, shape(output)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls

"""Regularisers that act on the training step: MixUp/CutMix (``aug.mixup_alpha``,
``aug.cutmix_alpha``) and an exponential moving average of the weights (``trainer.ema.decay``).

* MixUp/CutMix come from torchvision.transforms.v2 and work on the whole prepared batch:
  the images are mixed and the labels become class probabilities. Training accuracy then
  counts a prediction as right when it is the dominant (largest-weight) label of its mix.
* The EMA is torch.optim.swa_utils.AveragedModel over the module that trains, updated after
  every optimizer step: after the first step it equals the weights; then
  avg ← decay·avg + (1 − decay)·weights. Validation, best.pt and the test score use the
  averaged weights; last.pt keeps the raw weights and the average, so a resume is exact.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from facecls.errors import UserError


def build_mixer(mixup_alpha: float | None, cutmix_alpha: float | None, num_classes: int) -> Callable | None:
    """(images, labels) → (mixed images, label probabilities), or None when both are off.
    With both on, each batch uses one of the two, chosen at random."""

    if not mixup_alpha and not cutmix_alpha:
        return None
    from torchvision.transforms import v2  # deferred: `import torchvision` loads its whole model zoo

    options = []
    for name, alpha, cls in (("mixup", mixup_alpha, v2.MixUp), ("cutmix", cutmix_alpha, v2.CutMix)):
        if alpha is None or alpha == 0:
            continue
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
            raise UserError(f"aug.{name}_alpha={alpha} is invalid — use a number > 0 (e.g. 0.2), or 0 to turn it off.")
        options.append(cls(alpha=float(alpha), num_classes=num_classes))
    if not options:
        return None
    return options[0] if len(options) == 1 else v2.RandomChoice(options)


class WeightAverage:
    """The EMA of ``module``'s parameters and buffers (see the module docstring)."""

    def __init__(self, module: nn.Module, decay: float):
        if isinstance(decay, bool) or not 0.0 < float(decay) < 1.0:
            raise UserError(f"trainer.ema.decay={decay} is out of range — use 0 < decay < 1 (e.g. 0.999), "
                            "or null to turn the average off.")
        self.source = getattr(module, "_orig_mod", module)  # a compiled module's own weights
        self.averaged = AveragedModel(self.source, multi_avg_fn=get_ema_multi_avg_fn(float(decay)),
                                      use_buffers=True)

    @property
    def module(self) -> nn.Module:
        """The module with the averaged weights (evaluate this one)."""
        return self.averaged.module

    @torch.no_grad()
    def update(self) -> None:
        self.averaged.update_parameters(self.source)

    def model_state(self, model: nn.Module) -> dict:
        """``model``'s state_dict with the tensors of the averaged module in place of the raw
        ones (``model`` holds the trained module, e.g. a frozen backbone and its head)."""
        key_of = {id(t): k for k, t in model.state_dict(keep_vars=True).items()}
        state = model.state_dict()
        for raw, average in zip(self.source.state_dict(keep_vars=True).values(), self.module.state_dict().values()):
            if id(raw) in key_of:  # a loss head trained with the model is no part of it
                state[key_of[id(raw)]] = average
        return state

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)

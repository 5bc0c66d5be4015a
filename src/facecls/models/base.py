"""The model contract: what the runner may ask of a model, with the defaults a plain model
trained end to end needs. Every facecls model subclasses :class:`FaceModel`.

* ``preprocess(model_cfg)`` (classmethod) — how images are decoded for it: by default
  squashed to ``model_cfg.input_size``; a pretrained model returns its weights' pipeline.
* ``param_groups(lr)`` — what the optimizer gets: by default every trainable parameter;
  a finetuned model gives its backbone a smaller learning rate.
* ``training_view(data, prepare, features, augmented)`` — what actually trains, on what
  data: by default the model itself on the images; a frozen backbone trains its head on
  features computed once (:class:`facecls.data.features.FeatureCache`).

A model only ever sees its own config (``model.*``), never the whole run config.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from facecls.data.preprocess import Preprocess
from facecls.errors import UserError


@dataclass
class TrainingView:
    """What the loop trains: ``module`` on ``data`` (images, or a frozen backbone's
    features), with ``prepare`` turning a batch into its input on the device."""

    module: nn.Module
    data: object        # facecls.data.dataset.DataBundle
    prepare: Callable


class FaceModel(nn.Module):
    """Base class of facecls models (see the module docstring for the contract)."""

    @classmethod
    def preprocess(cls, model_cfg) -> Preprocess:
        """Decoding for this model: images squashed to ``input_size`` × ``input_size``."""
        return Preprocess(size=int(model_cfg["input_size"]))

    def param_groups(self, lr: float) -> list:
        """The optimizer's parameters; frozen parameters are never handed over."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise UserError("the model has no trainable parameters — check model.freeze.")
        return params

    def training_view(self, data, prepare: Callable, features, augmented: bool) -> TrainingView:
        """The model itself trains on the images. ``features`` (a FeatureCache) is there for
        models with a frozen backbone; ``augmented``: train-time augmentation is on."""
        return TrainingView(self, data, prepare)


def restore_model(model: nn.Module, state_dict: dict, source: str) -> None:
    """Load weights, turning a shape/key mismatch into one line naming the first difference."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if missing or unexpected or mismatched:
        if mismatched:
            k = mismatched[0]
            detail = f"{k} has shape {tuple(state_dict[k].shape)} there but {tuple(own[k].shape)} here"
        else:
            detail = f"missing keys {missing[:3]}" if missing else f"unexpected keys {unexpected[:3]}"
        raise UserError(f"the weights in {source} do not fit this model ({detail}) — use the "
                        "same model config the weights were trained with.")
    model.load_state_dict(state_dict)

"""The model contract: what the runner may ask of a model, with the defaults a plain model
trained end to end needs. Every facecls model subclasses :class:`FaceModel`.

* ``preprocess(model_cfg)`` (classmethod) — how images are decoded for it: by default
  squashed to ``model_cfg.input_size``; a pretrained model returns its weights' pipeline.
* ``param_groups(lr)`` — what the optimizer gets: by default every trainable parameter;
  a finetuned model gives its backbone a smaller learning rate (or one per stage: layer decay).
* ``start_epoch(epoch)`` — told before each training epoch: a staged fine-tune trains its
  head alone for ``freeze_epochs``, then the whole network.
* ``training_view(data, prepare, features, augmented)`` — what actually trains, on what
  data: by default the model itself on the images; a frozen backbone trains its head on
  features computed once (:class:`facecls.data.features.FeatureCache`).
* ``embedding_dim`` / ``embed(x)`` — open-set recognition: ``embedding_dim`` is None for a
  classifier and the width of the embedding for a model built with ``model.embedding_dim``
  (whose ``forward`` then returns the embedding, see :mod:`facecls.models.embedding`).
  ``embed`` gives the un-normalised embedding of a batch: the neck's output, or for a
  classifier the input of its last classification layer (``classifier_layer()``), so every
  classifier and every old checkpoint gets "cross-entropy features" for free.

A model only ever sees its own config (``model.*``), never the whole run config.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
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

    embedding_dim: int | None = None  # set by models built with model.embedding_dim

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

    def start_epoch(self, epoch: int) -> None:
        """Called before each training epoch (1-based; a resumed run too): staged fine-tuning
        (``model.freeze_epochs``) unfreezes its backbone here. Plain models change nothing."""

    def training_view(self, data, prepare: Callable, features, augmented: bool) -> TrainingView:
        """The model itself trains on the images. ``features`` (a FeatureCache) is there for
        models with a frozen backbone; ``augmented``: train-time augmentation is on."""
        return TrainingView(self, data, prepare)

    def classifier_layer(self) -> nn.Linear:
        """A classifier's last classification layer: by default the last ``nn.Linear`` it
        registers (true of every facecls model; a model where it is not overrides this)."""
        linears = [m for m in self.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise UserError(f"{type(self).__name__} has no linear classification layer to take embeddings "
                            "from — train it with model.embedding_dim set.")
        return linears[-1]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalised embeddings N×D of a prepared batch: an embedding model's output, or the
        input of a classifier's :meth:`classifier_layer` (its penultimate features)."""
        if self.embedding_dim is not None:
            return self(x)
        return input_of(self.classifier_layer(), self, x)


def input_of(layer: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``layer`` receives (flattened to N×D) when ``module`` runs on ``x``: a classifier's
    penultimate features, read with a forward hook so any architecture works unchanged."""
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
    try:
        module(x)
    finally:
        handle.remove()
    return captured[-1].flatten(1)


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

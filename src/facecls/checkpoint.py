"""Checkpoints: plain data only (tensors, numbers, strings, lists, dicts) so they load with
``torch.load(weights_only=True)`` — a checkpoint can never run code on the loading machine."""
from __future__ import annotations

import pickle
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from facecls.errors import UserError
from facecls.io import atomic_torch_save

FORMAT = "facecls-checkpoint/1"


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, config: dict, classes: list[str],
                    preprocess, epoch: int, optimizer=None, scheduler=None, **state: Any) -> Path:
    """Write a checkpoint atomically. ``state`` holds extra plain data (history, scores…)."""
    data = {
        "format": FORMAT,
        "model": model.state_dict(),
        "config": config,
        "classes": list(classes),
        "preprocess": asdict(preprocess),
        "epoch": int(epoch),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        **state,
    }
    return atomic_torch_save(data, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a facecls checkpoint, refusing anything that is not plain data."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist — pass ckpt=<run dir>/checkpoints/best.pt.")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(f"'{path}' holds objects other than plain data and was not loaded (safe "
                        f"loading refuses them: {str(err).splitlines()[0][:120]}) — use a checkpoint "
                        "written by facecls.") from None
    except Exception as err:  # any other failure: truncated, not a torch file, wrong format
        raise UserError(f"'{path}' is not a readable checkpoint ({type(err).__name__}) — pass a "
                        "checkpoints/best.pt or last.pt written by facecls.") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"'{path}' is not a facecls checkpoint — pass a checkpoints/best.pt or "
                        "last.pt from a facecls run dir.")
    return data


def restore_model(model: torch.nn.Module, state_dict: dict, source: str) -> None:
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

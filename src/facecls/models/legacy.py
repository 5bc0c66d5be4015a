"""Checkpoints of the AlexNet models from before they became presets of the general ones.

Until commit fe8467e ``model=alexnet_feature`` / ``alexnet_finetune`` were their
own classes, ``facecls.models.alexnet.AlexNetFeature`` / ``AlexNetFinetune``. Runs made with
them keep working: when a checkpoint names one of them, its model config becomes the preset's
(``FeatureExtractor``/``Finetune`` with ``name: alexnet``) and its weights are renamed to the
general models' keys — the tensors themselves are the same, so eval, visualize, predict and
resume give the same numbers as before. The parameters keep their order, so a saved
optimizer state still fits.
"""
from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

ALEXNET_WEIGHTS = "IMAGENET1K_V1"  # the only ImageNet weights torchvision has for AlexNet

_FEATURE = "facecls.models.feature_extractor.FeatureExtractor"
_FINETUNE = "facecls.models.finetune.Finetune"


def _feature_key(key: str) -> str:
    # The old backbone was nn.Sequential(*alexnet.features[:n]): its index is the features index.
    return re.sub(r"^backbone\.(\d+)\.", r"backbone.body.features.\1.", key)


def _finetune_key(key: str) -> str:
    # The old class held torchvision's features/avgpool/classifier itself; the new one wraps the net.
    return f"net.{key}"


LEGACY_MODELS = {
    "facecls.models.alexnet.AlexNetFeature": (_FEATURE, {"pool": "none"}, _feature_key),
    "facecls.models.alexnet.AlexNetFinetune": (_FINETUNE, {}, _finetune_key),
}  # old class → (new class, what its config lacked, how a state_dict key changes)


def _rename(state: dict | None, rename) -> dict | None:
    """``state`` with every tensor key renamed; a weight average's keys (``module.<key>``) too."""
    if state is None:
        return None
    out = {}
    for key, value in state.items():
        if key.startswith("module."):
            out["module." + rename(key.removeprefix("module."))] = value
        else:
            out[rename(key) if key != "n_averaged" else key] = value
    return out


def upgrade_checkpoint(data: dict, source: str) -> dict:
    """``data`` (a loaded checkpoint dict) in the current format; unchanged unless its model is a
    legacy AlexNet class. The EMA state's source module is the whole model only when the
    backbone ran every batch; a head-only average has the head's keys, which did not change."""
    model_cfg = (data.get("config") or {}).get("model") or {}
    legacy = LEGACY_MODELS.get(model_cfg.get("_target_"))
    if legacy is None:
        return data
    target, extra, rename = legacy
    new_cfg = {"_target_": target, "name": "alexnet", "weights": ALEXNET_WEIGHTS, **extra,
               **{k: v for k, v in model_cfg.items() if k != "_target_"}}
    data = dict(data, config=dict(data["config"], model=new_cfg))
    data["model"] = _rename(data["model"], rename)
    if data.get("ema") is not None:
        data["ema"] = _rename(data["ema"], rename)
    log.info("%s was written by %s (before AlexNet became a preset of %s): read as the preset.",
             source, model_cfg["_target_"], target.rsplit(".", 1)[-1])
    return data

"""Models are plain nn.Modules built from `conf/model/*.yaml` by their `_target_`.

Adding a model = one class + one yaml. A class may define ``preprocess(model_cfg)`` (a
classmethod returning :class:`facecls.data.decode.Preprocess`) when it needs a particular
input pipeline (e.g. ImageNet weights); otherwise images are squashed to ``input_size``.
"""
from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torch import nn

from facecls.data.decode import Preprocess
from facecls.errors import UserError


def build_model(model_cfg: DictConfig, num_classes: int) -> nn.Module:
    try:
        return instantiate(model_cfg, num_classes=num_classes)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        if isinstance(err.__cause__, (TypeError, ValueError)):
            raise UserError(f"cannot build model {model_cfg._target_}: {err.__cause__} "
                            "— check the model.* overrides.") from None
        raise


def preprocess_for(model_cfg: DictConfig) -> Preprocess:
    cls = get_class(model_cfg._target_)
    if hasattr(cls, "preprocess"):
        return cls.preprocess(model_cfg)
    return Preprocess(size=int(model_cfg.input_size))


def check_dropout(p: float) -> float:
    if not 0.0 <= float(p) < 1.0:
        raise UserError(f"dropout p={p} is out of range — use 0 <= p < 1 (e.g. reg.dropout.p=0.5).")
    return float(p)

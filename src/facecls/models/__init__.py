"""Models: nn.Modules that follow the :class:`facecls.models.base.FaceModel` contract, built
from `conf/model/*.yaml` by their `_target_`.

Adding a model = one FaceModel subclass + one yaml.
"""
from __future__ import annotations

from hydra.utils import get_class
from omegaconf import DictConfig

from facecls.config.instantiate import instantiate
from facecls.data.preprocess import Preprocess
from facecls.errors import UserError
from facecls.models.base import FaceModel


def model_class(model_cfg: DictConfig) -> type[FaceModel]:
    cls = get_class(model_cfg._target_)
    if not issubclass(cls, FaceModel):
        raise UserError(f"model {model_cfg._target_} is not a facecls model — subclass "
                        "facecls.models.base.FaceModel (see the README: adding a model).")
    return cls


def build_model(model_cfg: DictConfig, num_classes: int) -> FaceModel:
    model_class(model_cfg)
    return instantiate(model_cfg, what=f"model {model_cfg._target_}", num_classes=num_classes)


def preprocess_for(model_cfg: DictConfig) -> Preprocess:
    return model_class(model_cfg).preprocess(model_cfg)

"""Any torchvision classifier as a backbone: its name, weights, preprocessing and construction.

The general transfer-learning models (:mod:`facecls.models.feature_extractor`,
:mod:`facecls.models.finetune`) and ``facecls models`` share this module. Everything is
found from torchvision itself, never from a table per family:

* the models: ``torchvision.models.list_models`` (the classification ones), built with
  ``get_model`` and filled by :mod:`facecls.models.pretrained` (file, cache, download);
* the models built for one image size (ViT's ``image_size``, MaxViT's ``input_size``): the
  constructor of the class the builder returns takes that argument. They are built for
  ``model.input_size``, and ViT's pretrained position embeddings are interpolated to it.

Where a built network is cut or frozen (its graph nodes, classifier and stages) is
:mod:`facecls.models.backbone_graph`; its names are re-exported here for existing importers.

``model.source=timm`` takes the names, weights, preprocessing and construction from timm instead
(:mod:`facecls.models.timm_source`); the nodes, cuts, freezing and classifier are the same
code in :mod:`facecls.models.backbone_graph`, traced with timm's FX helpers.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import typing
from collections import OrderedDict

import torch
import torchvision
from torch import nn
from torchvision.models import get_model, get_model_builder, get_model_weights, list_models
from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings

from facecls.data.preprocess import Preprocess
from facecls.errors import UserError
from facecls.models.backbone_graph import (
    ALIASES,
    MIN_STAGES,
    PENULTIMATE,
    Cut,
    aliases_of,
    classifier_node,
    cut_network,
    feature_graph,
    graph_nodes,
    is_timm,
    node_names,
    output_shape,
    parameters_up_to,
    resolve_node,
    stages,
)
from facecls.models.pretrained import load_pretrained, weights_preprocess

__all__ = [
    "SOURCES", "SIZE_ARGUMENTS", "source_of", "classifier_names", "check_name", "weight_names", "resolve_weights",
    "preprocess_of", "size_argument", "construct", "adapt_state", "build_network",
    # the graph of a built network (facecls.models.backbone_graph), importable from here as before
    "ALIASES", "MIN_STAGES", "PENULTIMATE", "Cut", "aliases_of", "classifier_node", "cut_network", "feature_graph",
    "graph_nodes", "is_timm", "node_names", "output_shape", "parameters_up_to", "resolve_node", "stages",
]

log = logging.getLogger(__name__)


SOURCES = ("torchvision", "timm")


def source_of(source: str | None):
    """``model.source`` → None for torchvision (this module), or :mod:`facecls.models.timm_source`."""
    source = "torchvision" if source is None else str(source)
    if source not in SOURCES:
        raise UserError(f"model.source={source} is invalid — choose one of: {', '.join(SOURCES)}.")
    if source == "torchvision":
        return None
    try:
        from facecls.models import timm_source
    except ImportError as err:
        raise UserError(f"model.source=timm needs the timm package ({err}) — pip install 'facecls[timm]'.") from None
    return timm_source


def classifier_names() -> list[str]:
    """Every classification model torchvision lists (resnet18, vit_b_16, …)."""
    return list_models(module=torchvision.models)


def check_name(name: str) -> str:
    names = classifier_names()
    if name not in names:
        raise UserError(f"unknown model.name '{name}' — choose one of: {', '.join(names)} "
                        "(`facecls models` lists them with their sizes).")
    return name


def weight_names(name: str) -> list[str]:
    """The weights a model has, DEFAULT first (DEFAULT is an alias of one of them)."""
    return ["DEFAULT", *[w.name for w in get_model_weights(name)]]


def resolve_weights(name: str, weights: str | None):
    """``model.weights`` (DEFAULT, IMAGENET1K_V1, …) → the weights enum; None stays None."""
    if weights is None:
        return None
    enum = get_model_weights(name)
    try:
        return enum[str(weights)]
    except KeyError:
        raise UserError(f"unknown model.weights '{weights}' for {name} — choose one of: "
                        f"{', '.join(weight_names(name))} (or null for random init).") from None


def preprocess_of(name: str, weights: str | None, input_size: int | None, source: str | None = None) -> Preprocess:
    """The chosen weights' preprocessing, their resize interpolation included (random init: the
    DEFAULT weights', so runs compare); ``input_size`` changes the crop. timm: its pretrained_cfg's."""
    other = source_of(source)
    if other is not None:
        return other.preprocess_of(name, weights, input_size)
    enum = resolve_weights(check_name(name), weights) or get_model_weights(name).DEFAULT
    return weights_preprocess(enum, input_size)


# Constructor arguments that fix the image size a model is built for (VisionTransformer's
# image_size: an int; MaxVit's input_size: a pair).
SIZE_ARGUMENTS = ("image_size", "input_size")


def size_argument(name: str) -> inspect.Parameter | None:
    """The constructor argument that fixes ``name``'s image size, or None (any size fits). Found
    from the class the builder returns (``vit_b_16() -> VisionTransformer``), not per family."""
    try:
        cls = typing.get_type_hints(get_model_builder(name)).get("return")
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError, NameError, AttributeError):
        return None
    return next((params[a] for a in SIZE_ARGUMENTS if a in params), None)


def construct(name: str, size: int | None = None, device: str | None = None, option: str = "model.input_size"):
    """torchvision's ``name`` with random weights, built for size×size images where its
    constructor fixes the size (ViT: ``image_size``); ``device='meta'`` builds it without memory.
    A size the constructor refuses (not a multiple of ViT's patch size) → one UserError naming
    the nearest sizes that work."""
    arg = size_argument(name) if size is not None else None
    kwargs = {} if arg is None else {arg.name: _size_value(arg, int(size))}
    try:
        with torch.device(device) if device else contextlib.nullcontext():
            return get_model(name, weights=None, **kwargs)
    except (AssertionError, ValueError) as err:
        if not kwargs:
            raise
        raise _bad_size(name, int(size), arg, err, option) from None


def _size_value(arg: inspect.Parameter, size: int):
    return (size, size) if typing.get_origin(arg.annotation) is tuple or arg.annotation is tuple else size


def _builds(name: str, arg: inspect.Parameter, size: int) -> bool:
    try:
        with torch.device("meta"):  # a constructor's own checks, without memory or init time
            get_model(name, weights=None, **{arg.name: _size_value(arg, size)})
        return True
    except (AssertionError, ValueError, RuntimeError):
        return False


def _bad_size(name: str, size: int, arg: inspect.Parameter, err: Exception, option: str) -> UserError:
    default = int(get_model_weights(name).DEFAULT.transforms().crop_size[0])
    with torch.device("meta"):
        patch = getattr(get_model(name, weights=None), "patch_size", None)
    below = next((s for s in range(size - 1, max(0, size - 2 * default), -1) if _builds(name, arg, s)), None)
    above = next((s for s in range(size + 1, size + 2 * default) if _builds(name, arg, s)), None)
    nearest = " or ".join(str(s) for s in (below, above) if s is not None)
    why = (f"{name} takes multiples of its patch size {patch}" if patch else
           f"{name} refuses it ({str(err).splitlines()[0].split('. ')[0][:120]})")
    return UserError(f"{option}={size} does not fit: {why} — use {nearest + ', or ' if nearest else ''}"
                     f"null for the weights' own {default}.")


def adapt_state(net: nn.Module, state: dict) -> dict:
    """A pretrained state_dict made for another image size, made to fit ``net``: ViT's position
    embeddings interpolated to its grid (torchvision's ``interpolate_embeddings``). Anything
    else is returned as it is (a real mismatch is reported when it is loaded)."""
    key = "encoder.pos_embedding"
    if not isinstance(net, VisionTransformer) or key not in state:
        return state
    if tuple(state[key].shape) == tuple(net.encoder.pos_embedding.shape):
        return state
    try:
        adapted = interpolate_embeddings(net.image_size, net.patch_size, OrderedDict(state))
    except (ValueError, RuntimeError):
        return state
    log.info("Position embeddings interpolated from %d to %d tokens (%d×%d px input)", state[key].shape[1],
             adapted[key].shape[1], net.image_size, net.image_size)
    return adapted


def build_network(name: str, weights: str | None, pretrained: bool, weights_path: str | None,
                  size: int | None = None, source: str | None = None) -> nn.Module:
    """torchvision's (or timm's) ``name`` with the resolved weights (random init when ``weights`` is
    null or ``pretrained`` is false — facecls sets that when a checkpoint holds every weight), built
    for size×size input where the architecture fixes its image size (ViT)."""
    other = source_of(source)
    if other is not None:
        return other.build_network(name, weights, pretrained, weights_path, size)
    enum = resolve_weights(check_name(name), weights)
    if weights_path and not (pretrained and enum is not None):
        raise UserError(f"model.weights_path={weights_path} is set but model.weights=null or "
                        "model.pretrained=false — drop one of them (weights_path loads pretrained weights).")
    net = construct(name, size)
    if pretrained and enum is not None:
        load_pretrained(net, enum, weights_path, adapt=adapt_state)
    return net

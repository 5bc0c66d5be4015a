"""What ``facecls models`` shows: the backbones torchvision (or timm: ``source=timm``) offers,
and the nodes of one of them.

Nothing here downloads or allocates weights: parameter counts come from the weights' metadata
(or a model built on the ``meta`` device), node shapes from one forward pass on ``meta`` tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.models import get_model_weights

from facecls.errors import UserError
from facecls.models.backbone_graph import aliases_of, feature_graph, graph_nodes, node_names, resolve_node
from facecls.models.backbones import (
    check_name,
    classifier_names,
    construct,
    resolve_weights,
    source_of,
    weight_names,
)


@dataclass
class Backbone:
    name: str
    params: int | None  # None: not counted (timm's list: counting builds each model)
    weights: list[str]  # DEFAULT first
    default: str | None  # the weights DEFAULT stands for (None: timm has no weights for it)
    input_size: int     # the DEFAULT weights' crop


def _meta_model(name: str, size: int | None = None) -> torch.nn.Module:
    # shapes without memory or init time, even for vit_h_14; ViT built for size×size
    return construct(name, size, device="meta", option="input_size").eval()


def describe(name: str) -> Backbone:
    default = get_model_weights(name).DEFAULT
    params = default.meta.get("num_params") or sum(p.numel() for p in _meta_model(name).parameters())
    return Backbone(name, int(params), weight_names(name), default.name, int(default.transforms().crop_size[0]))


def backbones() -> list[Backbone]:
    """Every classification model torchvision lists, with its size and weights."""
    return [describe(name) for name in classifier_names()]


def timm_backbones(pattern: str | None = None) -> list[Backbone]:
    """timm's models matching ``pattern`` (``convnext*``; None: all), with their weights' tags and
    input size, from their pretrained configs (no model is built, so no parameter count)."""
    timm_source = source_of("timm")
    rows = []
    for name in timm_source.model_names(pattern):
        tags = timm_source.tags(name)
        rows.append(Backbone(name, None, ["DEFAULT", *tags], timm_source.default_tag(name),
                             timm_source.own_size(name, None)))
    return rows


def node_shapes(name: str, weights: str | None = "DEFAULT", input_size: int | None = None,
                source: str | None = None) -> list[tuple[str, str]]:
    """(name ``model.cut``/``model.freeze`` accept, its output shape C×H×W at ``input_size``
    — default: the weights' crop), in forward order; aliases show the node they stand for."""
    other = source_of(source)
    if other is not None:
        size = int(input_size or other.preprocess_of(name, weights, None).size)
        net = other.construct(name, weights, size, device="meta", option="input_size").eval()
    else:
        enum = resolve_weights(check_name(name), weights) or get_model_weights(name).DEFAULT
        size = int(input_size or enum.transforms().crop_size[0])
        net = _meta_model(name, size)
    nodes = graph_nodes(net)
    graph = feature_graph(net, {n: n for n in nodes})
    try:
        with torch.no_grad():
            outputs = graph(torch.zeros(1, 3, size, size, device="meta"))
    except (RuntimeError, ValueError, AssertionError, IndexError) as err:

        raise UserError(f"a {size}×{size} image does not fit through {name} ({str(err).splitlines()[0][:100]}) "
                        "— use a larger input_size.") from None

    def shape(node: str) -> str:
        value = outputs.get(resolve_node(nodes, name, node, "model.cut"))
        return "×".join(map(str, value.shape[1:])) if isinstance(value, torch.Tensor) else "—"

    aliases = aliases_of(name, nodes)
    return [(f"{n} (= {aliases[n]})" if n in aliases else n, shape(n)) for n in node_names(nodes, name)]

"""A backbone's traced graph: its nodes and their names, cutting at one, freezing up to one, its
classifier and its stages. :mod:`facecls.models.backbones` builds the network; this module
reads what ``model.cut``/``model.freeze``/``model.layer_decay`` act on, found from the graph
itself, never from a table per family:

* the places a model can be cut or frozen: the nodes of its traced graph
  (``get_graph_node_names``) — every leaf node (``layer3.1.relu_1``) and every module that
  holds nodes (``layer3``: its last node), plus a few readable aliases (AlexNet's ``conv4``);
* the classifier: the last ``nn.Linear`` in the traced graph, i.e. the one nearest the output.

A timm network (``model.source=timm``) is traced with timm's FX helpers
(``timm.models.get_graph_node_names``/``create_feature_extractor``: torchvision's, told timm's
leaf modules); everything else here is the same code for both sources.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from facecls.errors import UserError

PENULTIMATE = "penultimate"  # the input of the model's classifier
# Readable names for nodes, per family (the prefix of model.name): the AlexNet paper's blocks
# (a conv block ends after its ReLU; the presets conf/model/alexnet_*.yaml use them) and the ResNet stem.
ALIASES = {
    "alexnet": {"conv1": "features.1", "conv2": "features.4", "conv3": "features.7", "conv4": "features.9",
                "conv5": "features.11", "pool5": "avgpool", "fc6": "classifier.2", "fc7": "classifier.5"},
    "resnet": {"stem": "maxpool"},
    "resnext": {"stem": "maxpool"},
    "wide_resnet": {"stem": "maxpool"},
    "mobilenet": {"stem": "features.0"},
    "efficientnet": {"stem": "features.0"},
}


def is_timm(net: nn.Module) -> bool:
    return type(net).__module__.startswith("timm.")


def _tracer(net: nn.Module):
    """(get_graph_node_names, create_feature_extractor): torchvision's, or timm's wrappers of them
    (the same functions, told which timm modules and functions are leaves) for a timm network."""
    if is_timm(net):
        from timm.models import create_feature_extractor as timm_extractor
        from timm.models import get_graph_node_names as timm_node_names

        return timm_node_names, timm_extractor
    return get_graph_node_names, create_feature_extractor


def feature_graph(net: nn.Module, return_nodes: dict[str, str]) -> nn.Module:
    """``net``'s traced graph returning ``return_nodes`` (create_feature_extractor)."""
    return _tracer(net)[1](net, return_nodes=return_nodes)


def graph_nodes(net: nn.Module) -> list[str]:
    """The leaf nodes of ``net``'s traced eval graph, in forward order (the input left out)."""
    was_training = net.training
    net.eval()
    try:
        return [n for n in _tracer(net)[0](net)[1] if n != "x"]
    finally:
        net.train(was_training)


def node_names(nodes: list[str], name: str) -> list[str]:
    """Everything ``model.cut``/``model.freeze`` accept, in forward order: aliases, leaf nodes,
    and module names (each right after its last node)."""
    last: dict[str, int] = {}
    for i, node in enumerate(nodes):
        parts = node.split(".")
        for k in range(1, len(parts)):
            last[".".join(parts[:k])] = i
    after: dict[int, list[str]] = {}
    for prefix, i in sorted(last.items(), key=lambda kv: -kv[0].count(".")):  # deepest first
        after.setdefault(i, []).append(prefix)
    ordered = []
    for i, node in enumerate(nodes):
        ordered += [node, *after.get(i, [])]
    return [*aliases_of(name, nodes), *ordered]


def aliases_of(name: str, nodes: list[str] | None = None) -> dict[str, str]:
    """The family's aliases (by the prefix of ``name``); with ``nodes``, only those whose node or
    module is in that graph (timm's efficientnet has no torchvision ``features.0``)."""
    family = next((f for f in sorted(ALIASES, key=len, reverse=True) if name.startswith(f)), None)
    aliases = ALIASES.get(family, {})
    if nodes is None:
        return aliases
    return {a: t for a, t in aliases.items() if t in nodes or any(n.startswith(f"{t}.") for n in nodes)}


def resolve_node(nodes: list[str], name: str, value: str, option: str, source: str | None = None) -> str:
    """A cut/freeze name (alias, leaf node or module) → the leaf node it stands for."""
    aliases = aliases_of(name, nodes)
    target = aliases.get(value, value)
    if target in nodes:
        return target
    inside = [n for n in nodes if n.startswith(f"{target}.")]
    if inside:
        return inside[-1]
    modules = [n for n in node_names(nodes, name)[len(aliases):] if n not in nodes and n.count(".") <= 1]
    stages = [*aliases, *modules] or nodes
    listing = f"facecls models{'' if source in (None, 'torchvision') else f' source={source}'} name={name}"
    raise UserError(f"unknown {option} '{value}' for {name} — choose one of: {', '.join(stages)}"
                    f"{', ' + PENULTIMATE if option == 'model.cut' else ''} (every node: {listing}).")


def classifier_node(net: nn.Module, nodes: list[str]) -> tuple[str, nn.Module]:
    """The classifier: the last ``nn.Linear`` the traced graph calls (the one nearest the output).
    A timm network says which it is (``get_classifier()``): an ``nn.Linear``, or an ``nn.Identity``
    when its weights come without a head (DINOv2…) — its input is still the penultimate features."""
    if is_timm(net) and callable(getattr(net, "get_classifier", None)):
        head = net.get_classifier()
        name = next((n for n, m in net.named_modules() if m is head and n), None)
        if isinstance(head, (nn.Linear, nn.Identity)) and name:
            return name, head
        kind = " + ".join(type(h).__name__ for h in head) if isinstance(head, tuple) else type(head).__name__
        raise UserError(f"{type(net).__name__}'s classifier (timm get_classifier(): {kind}) is not one nn.Linear — "
                        "use a model.cut node with model=feature_extractor, or another model.name.")
    for node in reversed(nodes):
        try:
            module = net.get_submodule(node)
        except AttributeError:
            continue  # a functional node (add, flatten, getitem…)
        if isinstance(module, nn.Linear):
            return node, module
    raise UserError(f"{type(net).__name__} has no nn.Linear classifier to replace — use another model.name.")


class Cut(nn.Module):
    """The graph of a network up to one node (create_feature_extractor), returning that node's
    output; ``pool='avg'`` averages a spatial map (N×C×H×W) or a token sequence (N×L×D)."""

    def __init__(self, net: nn.Module, node: str, pool: str = "avg"):
        super().__init__()
        if pool not in ("avg", "none"):
            raise UserError(f"model.pool={pool} is invalid — choose one of: avg, none.")
        net.eval()
        self.body = feature_graph(net, {node: "out"})
        self.node, self.pool = node, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)["out"]
        if self.pool == "avg" and out.dim() == 4:
            return out.mean((2, 3))
        if self.pool == "avg" and out.dim() == 3:
            return out.mean(1)
        return out


def cut_network(net: nn.Module, name: str, cut: str, pool: str, source: str | None = None) -> Cut:
    """``net`` cut at ``cut`` (a node/module/alias, or penultimate = the classifier's input)."""
    nodes = graph_nodes(net)
    if cut == PENULTIMATE:
        node, _ = classifier_node(net, nodes)
        net.set_submodule(node, nn.Identity())  # the classifier's output becomes its input
        return Cut(net, node, pool)
    return Cut(net, resolve_node(nodes, name, str(cut), "model.cut", source), pool)


def _fits(module: nn.Module, size: int) -> tuple[int, ...] | None:
    try:
        with torch.no_grad():
            shape = tuple(module(torch.zeros(1, 3, size, size)).shape[1:])
    except (RuntimeError, ValueError, AssertionError, IndexError):
        return None
    return shape if math.prod(shape) > 0 else None


def output_shape(module: nn.Module, size: int, default_size: int, what: str) -> tuple[int, ...]:
    """``module``'s output shape for one size² image; a size it cannot take → one UserError with
    the smallest size that works (searched up to the weights' own ``default_size``)."""
    was_training = module.training
    module.eval()
    try:
        shape = _fits(module, size)
        if shape is not None:
            return shape
        low, high = 1, default_size
        if _fits(module, high) is None:
            raise UserError(f"model.input_size={size} does not fit {what} — use null for the weights' own "
                            f"{default_size}.")
        while low < high:  # the smallest size that fits (larger inputs fit too)
            mid = (low + high) // 2
            low, high = (low, mid) if _fits(module, mid) is not None else (mid + 1, high)
        raise UserError(f"model.input_size={size} is too small for {what} — use model.input_size >= {low}, "
                        f"or null for the weights' own {default_size}.")
    finally:
        module.train(was_training)


def parameters_up_to(net: nn.Module, nodes: list[str], node: str) -> list[str]:
    """Names of the parameters used at or before ``node`` in forward order. A parameter belongs to
    the first node of its module: the node itself, a node inside it (ViT's class token is held by
    the model), or the traced leaf that holds it (torchvision traces Conv2dNormActivation whole)."""
    stop = nodes.index(node)

    def related(owner: str, n: str) -> bool:
        return not owner or n == owner or n.startswith(f"{owner}.") or owner.startswith(f"{n}.")

    frozen = []
    for pname, _ in net.named_parameters():
        owner = pname.rpartition(".")[0]
        first = next((i for i, n in enumerate(nodes) if related(owner, n)), None)
        if first is not None and first <= stop:
            frozen.append(pname)
    return frozen


MIN_STAGES = 4  # fewer top-level stages than this (mobilenet's one `features`): split the largest


def stages(net: nn.Module, nodes: list[str], leave_out: str) -> list[tuple[str, list[str]]]:
    """``net``'s stages as (name, its parameter names), in forward order, leaving out the module ``leave_out``
    (the classifier). A stage is a top-level module (resnet: conv1, bn1, layer1…layer4); while
    there are fewer than ``MIN_STAGES``, the largest splittable stage is split into its children
    (mobilenet/efficientnet's ``features`` → features.0, features.1, …), and so is a stage of at
    least ``MIN_STAGES`` children that holds most parameters (ViT's encoder.layers), its own parameters
    (ViT's encoder.pos_embedding) a stage of their own before them. Parameters held by ``net``
    itself (ViT's class token) come first. Every name is a module ``facecls models`` lists."""
    owners = {pname: pname.rpartition(".")[0] for pname, _ in net.named_parameters()
              if not (pname.startswith(f"{leave_out}.") or pname.rpartition(".")[0] == leave_out)}

    def key(owner: str, depth: dict[str, int]) -> str:
        parts = owner.split(".") if owner else []
        k = 1
        while k <= len(parts) and depth.get(".".join(parts[:k])) is not None:
            k += 1  # this prefix was split: go one level deeper
        return ".".join(parts[:k]) if parts[:k] and k <= len(parts) else owner

    split: dict[str, int] = {}
    size = {pname: net.get_parameter(pname).numel() for pname in owners}
    while True:
        groups: dict[str, list[str]] = {}
        for pname, owner in owners.items():
            groups.setdefault(key(owner, split), []).append(pname)
        children = {g: len({key(owners[p], {**split, g: 1}) for p in names}) for g, names in groups.items() if g}
        weight = {g: sum(size[p] for p in groups[g]) for g in children}
        few = [g for g, n in children.items() if n > 1 and len(groups) < MIN_STAGES]
        # a run of blocks holding most of the backbone (ViT's encoder.layers): one stage per block
        blocks = [g for g, n in children.items() if n >= MIN_STAGES and 2 * weight[g] > sum(size.values())]
        if not few and not blocks:
            break
        split[max(few or blocks, key=weight.get)] = 1

    def position(group: str) -> int:
        if not group:
            return -1
        hits = [i for i, n in enumerate(nodes) if n == group or n.startswith(f"{group}.") or group.startswith(f"{n}.")]
        own = group in split  # a split module's own parameters come before its children
        return (min(hits) if hits else len(nodes)) * 2 - own

    return [(g, groups[g]) for g in sorted(groups, key=position)]

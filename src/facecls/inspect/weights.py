"""First-layer weights as images (report section 2.3, Fig. 6).

An MLP's first Linear layer has one weight per input pixel and channel, so each hidden
neuron reshapes to a C×H×W image of what it responds to. A conv model's first layer is a
bank of small C×k×k filters, drawn with torchvision's make_grid. Each image is min-max
normalised on its own (a neuron's absolute scale says nothing about its pattern).
"""
from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torchvision.utils import make_grid

from facecls.errors import UserError
from facecls.io import atomic_write_json
from facecls.models.tracing import trace_modules
from facecls.plots import plt, save_figure

log = logging.getLogger(__name__)


def first_layer(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[str, nn.Module]:
    """The first Conv2d or Linear the input meets (in forward order, found with hooks)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for call in trace_modules(model, torch.zeros(1, *input_shape, device=device)):
        if isinstance(call.module, (nn.Conv2d, nn.Linear)):
            return call.name, call.module
    raise UserError(f"{type(model).__name__} has no Conv2d or Linear layer to draw — weights need one.")


def weight_images(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[str, str, torch.Tensor]:
    """(layer name, 'filter' | 'neuron', N×C×H×W float weights of the first layer, on the CPU)."""
    name, layer = first_layer(model, input_shape)
    weight = layer.weight.detach().float().cpu()
    if isinstance(layer, nn.Conv2d):
        return name, "filter", weight
    # An MLP: a hidden neuron's weights cover every input value, so they reshape to an image.
    shape = tuple(input_shape)
    if weight.shape[1] != math.prod(shape):
        raise UserError(f"the first layer {name} takes {weight.shape[1]} values, not a {'×'.join(map(str, shape))} "
                        "image — weight images need an MLP on pixels or a conv model.")
    return name, "neuron", weight.reshape(len(weight), *shape)


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """N×C×H×W with C = 1 or 3 kept; other channel counts shown as their mean (gray)."""
    return images if images.shape[1] in (1, 3) else images.mean(1, keepdim=True)


def unit_scale(images: torch.Tensor) -> torch.Tensor:
    """Min-max each image to [0, 1] on its own; a constant image becomes 0.5 gray."""
    flat = images.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    span = (high - low).clamp_min(1e-12).view(-1, 1, 1, 1)
    scaled = (images - low.view(-1, 1, 1, 1)) / span
    return torch.where((high - low).view(-1, 1, 1, 1) > 0, scaled, torch.full_like(images, 0.5))


def choose_neurons(images: torch.Tensor, neurons, enlarge: int) -> tuple[list[int], list[int]]:
    """(indices in the grid, indices drawn large). The listed neurons, or all of them; the
    enlarged ones are the first listed, else the strongest (largest weight norm)."""
    n = len(images)
    if neurons is None:
        shown = list(range(n))
        strongest = images.flatten(1).norm(dim=1).argsort(descending=True).tolist()
        return shown, sorted(strongest[:enlarge])
    shown = [int(i) for i in neurons]
    bad = [i for i in shown if not 0 <= i < n]
    if bad or not shown:
        raise UserError(f"neurons={list(neurons)} is not a list of indices in 0…{n - 1} — the first layer "
                        f"has {n} units; e.g. neurons=[0,1,2].")
    return shown, shown[:enlarge]


def neuron_grid(images: torch.Tensor, indices: list[int], title: str):
    """One titled panel per neuron (MLP weights), each normalised on its own."""
    cols = min(len(indices), max(1, math.ceil(math.sqrt(len(indices) * 1.5))))
    rows = math.ceil(len(indices) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(0.9 * cols + 0.4, 1.0 * rows + 0.6), squeeze=False)
    pictures = unit_scale(as_rgb(images[indices]))
    for ax in axes.flat:
        ax.axis("off")
    for ax, index, picture in zip(axes.flat, indices, pictures):
        ax.imshow(picture.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", interpolation="nearest")
        ax.set_title(str(index), fontsize=7, pad=2)
    fig.suptitle(title, fontsize=10)
    return fig


def filter_grid(images: torch.Tensor, indices: list[int], title: str, width_inches: float = 6.0):
    """Conv filters tiled by make_grid (each scaled on its own), each index in the white
    padding above its filter."""
    nrow = max(1, math.ceil(math.sqrt(len(indices))))
    size = images.shape[-1]
    # Padding tall enough for 6-pt numbers: one grid pixel is width_inches·72 / grid_width points.
    pad = max(1, math.ceil(7 * nrow * size / (width_inches * 72 - 7 * nrow)))
    grid = make_grid(as_rgb(images[indices]), nrow=nrow, padding=pad, normalize=True, scale_each=True,
                     pad_value=1.0)
    fig, ax = plt.subplots(figsize=(width_inches, width_inches * grid.shape[1] / grid.shape[2] + 0.4))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    cell_h, cell_w = images.shape[2] + pad, images.shape[3] + pad
    for k, index in enumerate(indices):
        ax.text((k % nrow) * cell_w + pad + images.shape[3] / 2 - 0.5, (k // nrow) * cell_h + pad / 2 - 0.5,
                str(index), fontsize=6, ha="center", va="center")
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    return fig


def enlarged(images: torch.Tensor, indices: list[int], unit: str):
    """The selected neurons/filters drawn large, one titled panel each."""
    fig, axes = plt.subplots(1, len(indices), figsize=(2.6 * len(indices), 2.9), squeeze=False)
    pictures = unit_scale(as_rgb(images[indices]))
    for ax, index, picture in zip(axes.flat, indices, pictures):
        ax.imshow(picture.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", interpolation="nearest")
        ax.set_title(f"{unit} {index}", fontsize=10)
        ax.axis("off")
    return fig


def weight_figures(model: nn.Module, input_shape: tuple[int, int, int], neurons=None, enlarge: int = 4) -> dict:
    """Build the grid and enlarged figures; return them with what they show."""
    layer, unit, images = weight_images(model, input_shape)
    shown, large = choose_neurons(images, neurons, max(0, int(enlarge)))
    shape = "×".join(map(str, images.shape[1:]))
    draw = filter_grid if unit == "filter" else neuron_grid
    figures = {"weights.png": draw(images, shown, f"{layer}: {len(shown)} of {len(images)} {unit}s ({shape})")}
    if large:
        figures["weights_selected.png"] = enlarged(images, large, unit)
    norms = images.flatten(1).norm(dim=1)
    info = {"layer": layer, "unit": unit, "shape": list(images.shape[1:]), "count": len(images), "shown": shown,
            "enlarged": large, "weight_norm": {str(i): float(norms[i]) for i in shown}}
    return {"figures": figures, "info": info}


def run_weights(cfg, run, out) -> dict:
    """`facecls visualize weights`: write weights.png, weights_selected.png and weights.json."""
    prep = run.data.preprocess
    result = weight_figures(run.model, (3, prep.size, prep.size), cfg.neurons, cfg.enlarge)
    paths = [save_figure(fig, out / name) for name, fig in result["figures"].items()]
    info = result["info"]
    paths.append(atomic_write_json(out / "weights.json", info))
    log.info("%s: drew %d of %d %ss (%s); enlarged %s → %s", info["layer"], len(info["shown"]), info["count"],
             info["unit"], "×".join(map(str, info["shape"])), info["enlarged"], ", ".join(map(str, paths)))
    return info

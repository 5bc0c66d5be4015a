"""Which pixels drive a prediction (report section 2.5,
Figs. 11–15), computed with Captum on a private copy of the model.

- ``guided_backprop``: the input gradient with every ReLU passing back only positive
  gradient where its input was positive; drawn as the report's four images (colour, gray,
  positive and negative saliency).
- ``gradcam``: Grad-CAM on the last Conv2d the forward pass calls (a coarse class heat map)
  and Guided Grad-CAM.
- ``integrated_gradients``: gradients averaged along the path from a black image to the
  input, times the input difference; drawn like guided backprop.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import warnings

import numpy as np
import torch
from torch import nn

from facecls.config.checks import check_split
from facecls.errors import UserError
from facecls.inspect.images import class_name, pick_images, predict, to_picture
from facecls.io import atomic_write_json
from facecls.models.tracing import trace_modules
from facecls.plots import plt, save_figure

log = logging.getLogger(__name__)


def attribution_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with every in-place op turned off: Captum's ReLU hooks
    cannot see through in-place ReLUs, and the caller's model must stay untouched."""
    twin = copy.deepcopy(model).eval()
    for module in twin.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    return twin


# Activations guided backprop cannot guide: Captum changes the backward pass of nn.ReLU only.
UNGUIDED = (nn.Hardswish, nn.SiLU, nn.GELU, nn.Mish, nn.ELU, nn.LeakyReLU, nn.PReLU, nn.SELU, nn.CELU, nn.Softplus)


def unguided_activations(model: nn.Module) -> list[str]:
    """Names of the model's activation types that guided backprop would pass through unguided."""
    return sorted({type(m).__name__ for m in model.modules() if isinstance(m, UNGUIDED)})


def last_conv(model: nn.Module, x: torch.Tensor | None = None) -> nn.Conv2d:
    """The last Conv2d of the model: the one with the most semantic, still spatial, output. With
    an input ``x``: the last one the forward pass calls (a backbone cut early keeps later convs
    out of its graph, and registration order need not be call order)."""
    if x is not None:
        convs = [c.module for c in trace_modules(model, x) if isinstance(c.module, nn.Conv2d)]
    else:
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise UserError(f"method=gradcam needs a Conv2d layer and {type(model).__name__} has none — "
                        "use method=guided_backprop or method=integrated_gradients.")
    return convs[-1]


def _captum():
    try:
        import captum.attr
    except ImportError:
        raise UserError("attribution needs Captum, which is not installed — pip install 'facecls[viz]'.") from None
    return captum.attr


def _leaf(x: torch.Tensor) -> torch.Tensor:
    """A fresh input that requires grad (Captum warns when it has to set that itself)."""
    return x.detach().clone().requires_grad_(True)


@contextlib.contextmanager
def _quiet_captum():
    """Captum announces its (temporary) ReLU hooks on every call; that is no news here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        yield


def guided_backprop(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Guided-backprop gradient of logit ``target`` w.r.t. ``x`` (same shape as ``x``)."""
    if unguided := unguided_activations(model):
        raise UserError(f"guided backprop only guides ReLUs and {type(model).__name__} also uses "
                        f"{', '.join(unguided)} — use method=gradcam or method=integrated_gradients.")
    with _quiet_captum():
        return _captum().GuidedBackprop(attribution_copy(model)).attribute(_leaf(x), target=target).detach()


def gradcam(model: nn.Module, x: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(Grad-CAM map upsampled to the input, 1×1×H×W; Guided Grad-CAM, shaped like ``x``, or
    None where guided backprop cannot guide the model's activations)."""
    attr = _captum()
    twin = attribution_copy(model)
    layer = last_conv(twin, x)
    cam = attr.LayerGradCam(twin, layer).attribute(_leaf(x), target=target, relu_attributions=True)
    cam = attr.LayerAttribution.interpolate(cam.detach(), tuple(x.shape[-2:]), interpolate_mode="bilinear")
    if unguided_activations(twin):
        return cam, None
    with _quiet_captum():
        guided = attr.GuidedGradCam(twin, layer).attribute(_leaf(x), target=target, interpolate_mode="bilinear")
    return cam, guided.detach()


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: int, baseline: torch.Tensor,
                         steps: int = 50) -> tuple[torch.Tensor, float]:
    """(Integrated-gradients attribution shaped like ``x``, convergence delta)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"steps={steps} is invalid — give a whole number >= 1 (e.g. steps=50).")
    ig = _captum().IntegratedGradients(attribution_copy(model))
    result, delta = ig.attribute(_leaf(x), baselines=baseline, target=target, n_steps=steps,
                                 internal_batch_size=min(steps, 64), return_convergence_delta=True)
    return result.detach(), float(delta.abs().max())


def _array(t: torch.Tensor) -> np.ndarray:
    """A 1×C×H×W (or C×H×W) tensor as a float64 C×H×W array."""
    return t.detach().float().cpu().reshape(t.shape[-3:]).numpy().astype(np.float64)


# --- the report's four pictures of a gradient (C×H×W numpy array) --------------------------
# Each returns (picture in [0, 1], note); a gradient with no spread gives a blank picture and
# a note instead of a division by zero.

def colour_panel(g: np.ndarray):
    """Min-max over all channels at once, as an H×W×3 image."""
    low, high = float(g.min()), float(g.max())
    if high - low <= 0:
        return np.zeros(g.shape[1:] + (3,)), "the gradient is constant (all zero?), so the colour panel is blank"
    return ((g - low) / (high - low)).transpose(1, 2, 0), None


def gray_panel(g: np.ndarray):
    """Σ|g| over channels, scaled from its minimum to its 99th percentile and clipped."""
    total = np.abs(g).sum(0)
    low, high = float(total.min()), float(np.percentile(total, 99))
    if high <= low:  # a sparse gradient (≥ 99 % at its minimum): scale to the maximum instead
        high = float(total.max())
    if high - low <= 0:
        return np.zeros_like(total), "the gradient magnitude is constant, so the gray panel is blank"
    return np.clip((total - low) / (high - low), 0, 1), None


def positive_panel(g: np.ndarray):
    """max(0, g) / max(g): where raising a pixel raises the class score."""
    top = float(g.max())
    if top <= 0:
        return np.zeros(g.shape[1:] + (3,)), "no positive gradient, so the positive-saliency panel is blank"
    return (np.maximum(0, g) / top).transpose(1, 2, 0), None


def negative_panel(g: np.ndarray):
    """max(0, −g) / max(−g): where raising a pixel lowers the class score."""
    top = float((-g).max())
    if top <= 0:
        return np.zeros(g.shape[1:] + (3,)), "no negative gradient, so the negative-saliency panel is blank"
    return (np.maximum(0, -g) / top).transpose(1, 2, 0), None


def gradient_panels(gradient: torch.Tensor) -> tuple[dict[str, np.ndarray], list[str]]:
    """The four report panels of a 1×C×H×W (or C×H×W) gradient, and notes on blank ones."""
    g = _array(gradient)
    panels, notes = {}, []
    for name, draw in (("colour", colour_panel), ("gray", gray_panel), ("positive saliency", positive_panel),
                       ("negative saliency", negative_panel)):
        panels[name], note = draw(g)
        if note:
            notes.append(note)
    return panels, notes


def heatmap_panel(cam: torch.Tensor):
    """A Grad-CAM map (1×1×H×W, already ReLU'd) scaled by its maximum."""
    m = cam.detach().float().cpu().reshape(cam.shape[-2:]).numpy().astype(np.float64)
    top = float(m.max())
    if top <= 0:
        return np.zeros_like(m), "Grad-CAM is zero everywhere (no positive evidence), so its panel is blank"
    return np.clip(m / top, 0, 1), None


def _guided_backprop_panels(model, x, target, baseline, steps):
    panels, notes = gradient_panels(guided_backprop(model, x, target))
    return panels, notes, {}


def _gradcam_panels(model, x, target, baseline, steps):
    cam, guided = gradcam(model, x, target)
    drawn = {"Grad-CAM": heatmap_panel(cam)}
    if guided is not None:
        drawn.update({"guided Grad-CAM colour": colour_panel(_array(guided)),
                      "guided Grad-CAM gray": gray_panel(_array(guided))})
    notes = [f"{k}: {v[1]}" for k, v in drawn.items() if v[1]]
    if guided is None:
        notes.append(f"guided Grad-CAM left out: guided backprop only guides ReLUs and the model also uses "
                     f"{', '.join(unguided_activations(model))}")
    return {k: v[0] for k, v in drawn.items()}, notes, {}


def _integrated_gradients_panels(model, x, target, baseline, steps):
    attribution, delta = integrated_gradients(model, x, target, baseline, steps)
    panels, notes = gradient_panels(attribution)
    return panels, notes, {"convergence_delta": delta}


# method name → fn(model, x, target, baseline, steps) -> (panels, notes, extra numbers)
METHODS = {"guided_backprop": _guided_backprop_panels, "gradcam": _gradcam_panels,
           "integrated_gradients": _integrated_gradients_panels}


def explain(model: nn.Module, x: torch.Tensor, target: int, method: str, baseline: torch.Tensor | None = None,
            steps: int = 50) -> tuple[dict[str, np.ndarray], list[str], dict]:
    """Run ``method`` on input ``x`` (1×C×H×W, normalised) → (panels in [0, 1], notes on blank
    panels, extra numbers). ``baseline`` (integrated gradients) defaults to zeros."""
    if method not in METHODS:
        raise UserError(f"method={method} is unknown — use one of: {', '.join(METHODS)}.")
    if baseline is None:
        baseline = torch.zeros_like(x)
    return METHODS[method](model, x, target, baseline, steps)


def resolve_target(target, classes: list[str], predicted: int) -> int:
    """``target=``: null → the predicted class; a class index or a class name otherwise."""
    if target is None:
        return predicted
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(classes):
        return target
    if str(target) in classes:
        return classes.index(str(target))
    raise UserError(f"target={target} is not a class — give an index 0…{len(classes) - 1} or a name "
                    f"({', '.join(classes[:5])}{', …' if len(classes) > 5 else ''}), or leave it out.")


def attribution_figure(picture: np.ndarray, caption: str, panels: dict[str, np.ndarray], method: str):
    """The input with its prediction, then one panel per picture (the report's Figs. 11–15)."""
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(2.6 * (1 + len(panels)), 3.1), squeeze=False)
    axes = axes[0]
    axes[0].imshow(picture, interpolation="nearest")
    axes[0].set_title(caption, fontsize=8)
    for ax, (name, panel) in zip(axes[1:], panels.items()):
        if name == "Grad-CAM":  # a heat map over the image shows where it lies
            ax.imshow(picture, interpolation="nearest")
            ax.imshow(panel, cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
        else:
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(method.replace("_", " "), fontsize=10)
    return fig


def default_image(run, split_name: str):
    """With no ``image=``: the first image of the split the model gets right (else the first)."""
    split = run.data.split(split_name)
    for start in range(0, len(split), 256):
        predicted, _ = predict(run.model, run.prepare, split.inputs[start:start + 256])
        hits = (predicted == split.labels[start:start + 256]).nonzero().flatten()
        if len(hits):
            return start + int(hits[0])
    return 0


def run_attribution(cfg, run, out) -> dict:
    """`facecls visualize attribution`: attribution_<method>_<image>.png and .json."""
    if cfg.method not in METHODS:
        raise UserError(f"method={cfg.method} is unknown — use one of: {', '.join(METHODS)}.")
    split_name = check_split(cfg.split)
    spec = cfg.image if cfg.image is not None else default_image(run, split_name)
    picked = pick_images(spec, run, split_name)
    if len(picked) != 1:
        raise UserError(f"image={list(spec)} names {len(picked)} images — attribution explains one: "
                        "image=INDEX or PATH.")
    image = picked[0]
    predicted, confidence = predict(run.model, run.prepare, image.pixels[None])
    predicted, confidence = int(predicted[0]), float(confidence[0])
    target = resolve_target(cfg.target, run.classes, predicted)
    x = run.prepare(image.pixels[None], train=False).float().contiguous()
    baseline = run.prepare(torch.zeros_like(image.pixels[None]), train=False).float()  # a black image
    panels, notes, extra = explain(run.model, x, target, cfg.method, baseline, cfg.steps)
    caption = (f"true: {class_name(run.classes, image.label)}\npredicted: {run.classes[predicted]} "
               f"({confidence:.2f})" + (f"\nexplaining: {run.classes[target]}" if target != predicted else ""))
    stem = f"attribution_{cfg.method}_{image.tag}"
    png = save_figure(attribution_figure(to_picture(image.pixels), caption, panels, cfg.method), out / f"{stem}.png")
    info = {"method": cfg.method, "image": image.name, "index": image.index, "split": split_name,
            "true": class_name(run.classes, image.label), "predicted": run.classes[predicted],
            "confidence": confidence, "target": run.classes[target], "panels": list(panels), "notes": notes, **extra}
    atomic_write_json(out / f"{stem}.json", info)
    for note in notes:
        log.warning("%s", note)
    log.info("%s on %s (true %s, predicted %s %.2f, explaining %s)%s → %s", cfg.method, image.name, info["true"],
             info["predicted"], confidence, info["target"],
             f", convergence delta {extra['convergence_delta']:.2e}" if "convergence_delta" in extra else "", png)
    return info

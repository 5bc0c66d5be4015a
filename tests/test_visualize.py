"""`facecls visualize weights|predictions|attribution` on tiny trained runs, and the
attribution maths against a hand-written guided ReLU."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from facecls.errors import UserError
from facecls.inspect.attribution import attribution_figure, explain, gradient_panels, guided_backprop
from facecls.models.convnet import ConvNet

from helpers import read_csv, run_cli, train_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_faces):
    """A 1-epoch ConvNet and MLP (12 hidden neurons) trained by `facecls train`."""
    base = tmp_path_factory.mktemp("visualize")
    ckpts, env = train_runs(base, tiny_faces, ["convnet", "mlp"])
    return ckpts, env, base


def loaded(runs, name):
    from facecls.inference.loading import load_run

    ckpts, env, _ = runs
    return load_run(ckpts[name], "cpu", None, env["FACECLS_CACHE_DIR"], progress=False)


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
        assert im.format == "PNG"
        return im.size


def image_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.images]


# --- the commands ---------------------------------------------------------------------------

def test_weights_command_draws_every_mlp_neuron_and_the_strongest_enlarged(runs, tmp_path):
    ckpts, env, base = runs
    out = tmp_path / "w"
    run_cli("visualize", "weights", f"ckpt={ckpts['mlp']}", f"out={out}", cwd=tmp_path, env=env)
    info = json.loads((out / "weights.json").read_text())
    assert info["unit"] == "neuron" and info["shape"] == [3, 16, 16] and info["count"] == 12
    assert info["shown"] == list(range(12)) and len(info["enlarged"]) == 4
    norms = info["weight_norm"]
    assert min(norms[str(i)] for i in info["enlarged"]) >= max(
        v for k, v in norms.items() if int(k) not in info["enlarged"])
    assert png_size(out / "weights.png")[0] > 200 and png_size(out / "weights_selected.png")[0] > 400
    assert not (base / "mlp" / "weights.png").exists()  # out= wins over the run dir


def test_weight_figures_panels_titles_and_selection(runs):
    from facecls.inspect.weights import weight_figures

    mlp = loaded(runs, "mlp").model
    result = weight_figures(mlp, (3, 16, 16), neurons=[0, 3, 5], enlarge=2)
    grid = image_axes(result["figures"]["weights.png"])
    assert [ax.get_title() for ax in grid] == ["0", "3", "5"]
    picture = grid[1].images[0].get_array()
    assert picture.shape == (16, 16, 3) and picture.min() == 0.0 and picture.max() == 1.0  # per-neuron scaling
    assert [ax.get_title() for ax in image_axes(result["figures"]["weights_selected.png"])] == ["neuron 0", "neuron 3"]
    with pytest.raises(UserError, match="neurons=.*0…11"):
        weight_figures(mlp, (3, 16, 16), neurons=[12])

    conv = weight_figures(ConvNet(3, input_size=16), (3, 16, 16), enlarge=0)
    assert conv["info"]["unit"] == "filter" and conv["info"]["shape"] == [3, 5, 5]
    (ax,) = conv["figures"]["weights.png"].axes  # make_grid: one tiled image ...
    assert sorted(int(t.get_text()) for t in ax.texts) == list(range(16))  # ... with every index
    assert "weights_selected.png" not in conv["figures"]


def test_predictions_command_writes_gallery_and_table(runs, tmp_path):
    ckpts, env, _ = runs
    run_cli("visualize", "predictions", f"ckpt={ckpts['convnet']}", "count=2", f"out={tmp_path}",
            cwd=tmp_path, env=env)
    rows = read_csv(tmp_path / "predictions.csv")
    run = loaded(runs, "convnet")
    for r in rows:
        assert r["file"] == run.data.test.files[int(r["index"])]
        assert r["true"] == run.classes[int(run.data.test.labels[int(r["index"])])]
        assert r["correct"] == str(int(r["true"] == r["predicted"])) == ("1" if r["row"] == "correct" else "0")
        assert 0 < float(r["confidence"]) <= 1
    assert 1 <= len(rows) <= 4 and all(sum(r["row"] == h for r in rows) <= 2 for h in ("correct", "false"))
    png_size(tmp_path / "predictions.png")


def test_prediction_gallery_is_reproducible_and_has_one_panel_per_image(runs):
    from facecls.inspect.predictions import prediction_gallery

    run = loaded(runs, "convnet")
    fig, rows = prediction_gallery(run, "val", count=3, seed=0)
    again = prediction_gallery(run, "val", count=3, seed=0)[1]
    pick = [[e["index"] for e in entries] for _, entries in rows]
    assert pick == [[e["index"] for e in entries] for _, entries in again]
    assert len(image_axes(fig)) == sum(len(p) for p in pick) >= 1
    chosen = prediction_gallery(run, "test", count=1, seed=0, image=[0, 2])[1]
    assert [e["index"] for e in chosen[0][1]] == [0, 2]
    with pytest.raises(UserError, match="out of range"):
        prediction_gallery(run, "test", count=1, seed=0, image=99)


def test_attribution_command_draws_input_and_four_panels(runs, tmp_path):
    ckpts, env, _ = runs
    run_cli("visualize", "attribution", f"ckpt={ckpts['convnet']}", "method=guided_backprop", "image=1",
            f"out={tmp_path}", cwd=tmp_path, env=env)
    info = json.loads((tmp_path / "attribution_guided_backprop_test1.json").read_text())
    assert info["panels"] == ["colour", "gray", "positive saliency", "negative saliency"]
    assert info["index"] == 1 and info["target"] == info["predicted"]
    png_size(tmp_path / "attribution_guided_backprop_test1.png")


def test_every_method_runs_on_a_trained_run_and_mlp_has_no_gradcam(runs, tmp_path):
    from facecls.inspect.attribution import run_attribution

    run = loaded(runs, "convnet")
    cfg = OmegaConf.create({"method": "gradcam", "split": "test", "image": 0, "target": None, "steps": 16})
    assert run_attribution(cfg, run, tmp_path)["panels"] == ["Grad-CAM", "guided Grad-CAM colour",
                                                            "guided Grad-CAM gray"]
    cfg.method, cfg.target = "integrated_gradients", run.classes[2]
    info = run_attribution(cfg, run, tmp_path)
    assert info["target"] == run.classes[2] and np.isfinite(info["convergence_delta"])
    cfg.method = "saliency"
    with pytest.raises(UserError, match="guided_backprop, gradcam, integrated_gradients"):
        run_attribution(cfg, run, tmp_path)
    mlp = loaded(runs, "mlp")
    with pytest.raises(UserError, match="needs a Conv2d"):
        explain(mlp.model, mlp.prepare(mlp.data.test.inputs[:1]), 0, "gradcam")


# --- attribution maths ------------------------------------------------------------------------

class GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradient, and only where its input was positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype)


class GuidedReLUModule(nn.Module):
    def forward(self, x):
        return GuidedReLU.apply(x)


def reference_guided_gradient(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    twin = copy.deepcopy(model).eval()
    for parent in list(twin.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, GuidedReLUModule())
    x = x.detach().clone().requires_grad_(True)
    twin(x)[0, target].backward()
    return x.grad


def fingerprint(model: nn.Module):
    return ([m.inplace for m in model.modules() if isinstance(m, nn.ReLU)],
            [len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules()],
            {k: v.clone() for k, v in model.state_dict().items()})


@pytest.mark.parametrize("name", ["convnet", "alexnet"])
def test_guided_backprop_equals_hand_written_guided_relu_and_leaves_model_alone(name):
    torch.manual_seed(0)
    if name == "alexnet":  # in-place ReLUs everywhere; 64 px keeps it quick (adaptive pool)
        model, x = torchvision.models.alexnet(weights=None).eval(), torch.randn(1, 3, 64, 64)
    else:
        model, x = ConvNet(3, input_size=16, pool=True).eval(), torch.randn(1, 3, 16, 16)
    before = fingerprint(model)
    target = int(model(x).argmax())
    ours = guided_backprop(model, x, target)
    reference = reference_guided_gradient(model, x, target)
    assert ours.shape == x.shape and reference.abs().max() > 0
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)
    after = fingerprint(model)
    assert before[0] == after[0] and all(before[0]) and before[1] == after[1]
    assert all(torch.equal(before[2][k], after[2][k]) for k in before[2])


def test_gradient_panels_have_the_input_shape_and_lie_in_unit_range():
    g = torch.randn(1, 3, 12, 10)
    panels, notes = gradient_panels(g)
    assert notes == []
    assert panels["colour"].shape == panels["positive saliency"].shape == (12, 10, 3)
    assert panels["gray"].shape == (12, 10)
    for picture in panels.values():
        assert np.isfinite(picture).all() and picture.min() >= 0 and picture.max() == pytest.approx(1.0)
    a = g[0].double().numpy()
    np.testing.assert_allclose(panels["positive saliency"], np.maximum(a, 0).transpose(1, 2, 0) / a.max())
    np.testing.assert_allclose(panels["negative saliency"], np.maximum(-a, 0).transpose(1, 2, 0) / -a.min())
    gray = np.abs(a).sum(0)
    low, high = gray.min(), np.percentile(gray, 99)
    np.testing.assert_allclose(panels["gray"], np.clip((gray - low) / (high - low), 0, 1))
    assert (panels["gray"] == 1).sum() >= 2  # the top 1 % (of 120 values) clip to white
    np.testing.assert_allclose(panels["colour"], ((a - a.min()) / (a.max() - a.min())).transpose(1, 2, 0))


def test_all_zero_gradient_gives_blank_panels_and_notes_not_nan():
    panels, notes = gradient_panels(torch.zeros(1, 3, 8, 8))
    assert len(notes) == 4 and all("blank" in n for n in notes)
    assert all(np.isfinite(p).all() and (p == 0).all() for p in panels.values())
    spike = torch.zeros(1, 3, 8, 8)
    spike[0, 1, 2, 5] = 3.0  # 99 % of the magnitudes sit at the minimum: gray scales to the maximum
    panels, notes = gradient_panels(spike)
    assert panels["gray"][2, 5] == 1.0 and panels["gray"].sum() == 1.0
    assert notes == ["no negative gradient, so the negative-saliency panel is blank"]
    model = ConvNet(2, input_size=16)
    nn.init.zeros_(model.classifier[-1].weight)  # the class score ignores the input → zero gradient
    panels, notes, _ = explain(model, torch.randn(1, 3, 16, 16), 0, "guided_backprop")
    assert notes and all(np.isfinite(p).all() for p in panels.values())
    fig = attribution_figure(np.zeros((16, 16, 3), np.uint8), "x", panels, "guided_backprop")
    assert len(image_axes(fig)) == 5


def test_integrated_gradients_add_up_to_the_score_difference():
    from facecls.inspect.attribution import integrated_gradients

    torch.manual_seed(0)
    model = ConvNet(3, input_size=16).eval()
    x, baseline = torch.randn(1, 3, 16, 16), torch.zeros(1, 3, 16, 16)
    attribution, delta = integrated_gradients(model, x, 1, baseline, steps=64)
    with torch.no_grad():
        gap = (model(x)[0, 1] - model(baseline)[0, 1]).item()
    assert attribution.sum().item() == pytest.approx(gap, abs=1e-2 * max(1.0, abs(gap)))
    assert delta < 1e-2 * max(1.0, abs(gap))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_attribution_on_cuda_matches_cpu():
    torch.manual_seed(0)
    model, x = ConvNet(3, input_size=16, pool=True).eval(), torch.randn(1, 3, 16, 16)
    cpu = guided_backprop(model, x, 1)
    gpu = guided_backprop(model.cuda(), x.cuda(), 1)
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-4)
    for method in ("gradcam", "integrated_gradients"):
        panels, _, _ = explain(model, x.cuda(), 1, method, steps=8)
        assert all(np.isfinite(p).all() and p.shape[:2] == (16, 16) for p in panels.values())

"""ArcFace and CosFace heads against hand computations on a 2-D toy case."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facecls.errors import UserError
from facecls.training.losses import ArcFace, CosFace

# Three class centres on the unit circle at 0°, 90° and 180°.
CENTRES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])


def at(degrees: float, length: float = 1.0) -> torch.Tensor:
    rad = math.radians(degrees)
    return torch.tensor([[length * math.cos(rad), length * math.sin(rad)]])


def head(cls, **kwargs):
    module = cls(2, 3, **kwargs)
    with torch.no_grad():
        module.weight.copy_(CENTRES * torch.tensor([[2.0], [0.5], [3.0]]))  # lengths must not matter
    return module


def test_arcface_target_logit_is_cos_of_angle_plus_margin():
    arc = head(ArcFace, margin=0.5, scale=64.0)
    logits = arc(at(30, length=5.0), torch.tensor([0]))
    theta = math.acos(math.cos(math.radians(30)))
    expected = [64 * math.cos(theta + 0.5), 64 * math.cos(math.radians(60)), 64 * math.cos(math.radians(150))]
    assert logits[0].tolist() == pytest.approx(expected, abs=1e-4)


def test_arcface_past_pi_uses_the_insightface_fallback():
    arc = head(ArcFace, margin=0.5, scale=10.0)
    logits = arc(at(170), torch.tensor([0]))  # θ = 170°: θ + m = 3.47 rad > π
    cos = math.cos(math.radians(170))
    assert cos <= math.cos(math.pi - 0.5)
    assert logits[0, 0].item() == pytest.approx(10 * (cos - math.sin(math.pi - 0.5) * 0.5), abs=1e-4)
    # cos(θ + m) itself would have turned back up here: the fallback keeps the logit below it.
    assert logits[0, 0].item() < 10 * math.cos(math.radians(170) + 0.5)
    # Just below the switch (θ + m < π) the plain formula applies.
    theta = math.pi - 0.5 - 0.01
    near = arc(at(math.degrees(theta)), torch.tensor([0]))[0, 0].item()
    assert near == pytest.approx(10 * math.cos(theta + 0.5), abs=1e-4)


def test_cosface_subtracts_the_margin_from_the_target_cosine():
    cos_head = head(CosFace, margin=0.35, scale=30.0)
    logits = cos_head(at(45, length=0.2), torch.tensor([1]))
    c = math.cos(math.radians(45))
    assert logits[0].tolist() == pytest.approx([30 * c, 30 * (c - 0.35), 30 * math.cos(math.radians(135))], abs=1e-4)


@pytest.mark.parametrize("cls", [ArcFace, CosFace])
def test_only_the_target_logit_changes(cls):
    module = cls(8, 5)
    embeddings, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    plain, margin = module.cosine(embeddings), module(embeddings, labels)
    target = F.one_hot(labels, 5).bool()
    assert torch.equal(margin[~target], plain[~target])
    assert torch.all(margin[target] < plain[target])  # the margin always makes the true class harder
    expected = module.scale * F.normalize(embeddings) @ F.normalize(module.weight).T
    assert torch.allclose(plain, expected, atol=1e-4)


@pytest.mark.parametrize("cls", [ArcFace, CosFace])
def test_gradients_are_finite_at_cos_plus_and_minus_one(cls):
    module = head(cls)
    embeddings = torch.cat([at(0), at(180), at(90)]).requires_grad_()  # cos = 1 and -1 with class 0
    loss = F.cross_entropy(module(embeddings, torch.tensor([0, 0, 1])), torch.tensor([0, 0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(embeddings.grad).all() and torch.isfinite(module.weight.grad).all()


def test_float32_under_autocast_and_weight_shape():
    module = ArcFace(16, 4)
    assert module.weight.shape == (4, 16)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits = module(torch.randn(3, 16).bfloat16(), torch.tensor([0, 1, 2]))
    assert logits.dtype == torch.float32


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="margin"):
        ArcFace(8, 4, margin=-0.1)
    with pytest.raises(UserError, match="2 classes"):
        CosFace(8, 1)

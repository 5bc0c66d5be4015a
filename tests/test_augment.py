"""Batched train-time augmentation (facecls.data.augment): torchvision's recipe and formulas,
every image its own parameters, reproducible from the seed, and the per-image fallback."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from facecls.data import augment as A
from facecls.data.batches import BatchPreparer, build_transform
from facecls.data.preprocess import Preprocess

CONF = str(Path(__file__).resolve().parents[1] / "conf")
CPU = torch.device("cpu")
PREP = Preprocess(size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
BASIC = [{"_target_": "facecls.data.augment.RandomHorizontalFlip", "p": 0.5},
         {"_target_": "facecls.data.augment.RandomAffine", "degrees": 10, "translate": [0.05, 0.05],
          "scale": [0.95, 1.05]},
         {"_target_": "facecls.data.augment.ColorJitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2}]


def aug_transforms(name: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=[f"aug={name}"]).aug.get("transforms")


def face(size: int = 32) -> torch.Tensor:
    """A uint8 3×size×size image with structure: a colour gradient and a bright off-centre patch."""
    ramp = torch.linspace(0, 1, size)
    image = torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size),
                         0.5 * torch.ones(size, size)])
    image[:, size // 5:size // 2, size // 4:size // 2] = torch.tensor([0.9, 0.8, 0.2])[:, None, None]
    return (image * 255).round().to(torch.uint8)


def ks_distance(sample: torch.Tensor, low: float, high: float) -> float:
    """Kolmogorov–Smirnov distance of ``sample`` from the uniform distribution on [low, high]."""
    values = ((sample.double().sort().values - low) / (high - low)).clamp(0, 1)
    n = len(values)
    steps = torch.arange(1, n + 1, dtype=torch.float64) / n
    return float(torch.maximum(steps - values, values - (steps - 1 / n)).max())


# --- the same formulas as torchvision, parameters given ---------------------------------------------

@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_affine_warp_is_torchvisions_affine_for_every_image(interpolation):
    torch.manual_seed(0)
    x = torch.rand(5, 3, 20, 28)  # not square: the aspect ratio must be handled
    angle = torch.tensor([0.0, 10.0, -7.5, 30.0, 45.0], dtype=torch.float64)
    translate = torch.tensor([[0, 0], [3, -2], [0, 1], [-5, 4], [2, 0]], dtype=torch.float64)
    scale = torch.tensor([1.0, 0.95, 1.05, 1.2, 0.8], dtype=torch.float64)
    shear = torch.tensor([[0, 0], [0, 0], [5, 0], [0, 8], [10, -5]], dtype=torch.float64)
    ours = A.warp(x, A.affine_theta(angle, translate, scale, shear, 20, 28), interpolation)
    for i in range(5):
        theirs = TF.affine(x[i], angle=float(angle[i]), translate=translate[i].tolist(), scale=float(scale[i]),
                           shear=shear[i].tolist(), interpolation=TF.InterpolationMode(interpolation), fill=None)
        torch.testing.assert_close(ours[i], theirs, atol=1e-4, rtol=0)


def test_color_jitter_is_torchvisions_in_the_drawn_order():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16)
    jitter = A.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5)
    params = jitter.sample(8, 16, 16)
    out = jitter.apply(x, params)
    steps = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast, "saturation": TF.adjust_saturation}
    names = list(jitter.ranges)
    for i in range(8):
        expected = x[i]
        for j in params["order"][i].tolist():
            expected = steps[names[j]](expected, float(params[names[j]][i]))
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["brightness", "color", "contrast", "sharpness", "posterize", "solarize",
                                  "autocontrast", "equalize"])
def test_trivial_augment_colour_operations_are_torchvisions(name):
    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 12, 12)).float() / 255
    values = {"posterize": [8.0, 6.0, 4.0, 2.0], "solarize": [0.2, 0.5, 0.8, 1.0]}.get(name, [0.3, -0.5, 0.9, 0.1])
    reference = {
        "brightness": lambda im, v: TF.adjust_brightness(im, 1 + v),
        "color": lambda im, v: TF.adjust_saturation(im, 1 + v),
        "contrast": lambda im, v: TF.adjust_contrast(im, 1 + v),
        "sharpness": lambda im, v: TF.adjust_sharpness(im, 1 + v),
        "posterize": lambda im, v: TF.posterize((im * 255).round().to(torch.uint8), int(v)).float() / 255,
        "solarize": lambda im, v: TF.solarize(im, v),
        "autocontrast": lambda im, v: TF.autocontrast(im),
        "equalize": lambda im, v: TF.equalize(im),
    }[name]
    ours = A.TrivialAugment._colour(name, x, torch.tensor(values).view(-1, 1, 1, 1))
    torch.testing.assert_close(ours, torch.stack([reference(x[i], values[i]) for i in range(4)]), atol=1e-5, rtol=0)


# --- parameter statistics: the v2 recipe ---------------------------------------------------------

def test_flip_fraction_and_what_a_flip_does():
    torch.manual_seed(0)
    flip = A.RandomHorizontalFlip(p=0.5)
    fraction = flip.sample(2000, 8, 8)["flip"].float().mean().item()
    assert abs(fraction - 0.5) < 0.04  # binomial sd 0.011
    assert not A.RandomHorizontalFlip(p=0.0).sample(500, 8, 8)["flip"].any()
    assert A.RandomHorizontalFlip(p=1.0).sample(500, 8, 8)["flip"].all()
    x = torch.rand(50, 3, 6, 6)
    params = flip.sample(50, 6, 6)
    out = flip.apply(x, params)
    for i in range(50):
        torch.testing.assert_close(out[i], x[i].flip(-1) if params["flip"][i] else x[i], atol=0, rtol=0)


def test_affine_parameters_follow_the_v2_recipe():
    torch.manual_seed(0)
    n = 20_000
    params = A.RandomAffine(degrees=10, translate=[0.05, 0.05], scale=[0.95, 1.05]).sample(n, 64, 64)
    angle, translate, scale = params["angle"], params["translate"], params["scale"]
    # angle uniform in [-10, 10]: range, moments, shape
    assert -10 <= angle.min() < -9.9 and 9.9 < angle.max() <= 10
    assert abs(angle.mean()) < 0.25 and abs(angle.std() - 20 / math.sqrt(12)) < 0.15
    assert ks_distance(angle, -10, 10) < 0.015
    # the matrices carry those angles and scales (recovered from theta of a square image)
    theta = A.affine_theta(angle, torch.zeros(n, 2, dtype=torch.float64), scale, torch.zeros(n, 2, dtype=torch.float64),
                           64, 64)
    recovered = torch.rad2deg(torch.atan2(theta[:, 0, 1], theta[:, 0, 0]))
    torch.testing.assert_close(recovered, angle)
    torch.testing.assert_close(1 / torch.hypot(theta[:, 0, 0], theta[:, 0, 1]), scale)
    # scale uniform in [0.95, 1.05]
    assert 0.95 <= scale.min() and scale.max() <= 1.05 and ks_distance(scale, 0.95, 1.05) < 0.015
    # translation: round(uniform(±0.05·64 = ±3.2)) whole pixels, as torchvision
    assert set(translate.flatten().tolist()) == {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0}
    p_edge = (3.2 - 2.5) / 6.4
    assert abs((translate[:, 0] == 3).double().mean() - p_edge) < 0.01
    assert abs((translate[:, 1] == 0).double().mean() - 1 / 6.4) < 0.01
    assert abs(translate.mean()) < 0.05


def test_color_factors_follow_the_v2_recipe_recovered_from_the_images():
    torch.manual_seed(0)
    n = 4000
    # brightness alone on a flat grey image: out = 0.5 · factor, so the factor can be read back
    grey = torch.full((n, 3, 2, 2), 0.5)
    factors = (A.ColorJitter(brightness=0.2)(grey)[:, 0, 0, 0] / 0.5).double()
    assert 0.8 <= factors.min() < 0.805 and 1.195 < factors.max() <= 1.2
    assert abs(factors.mean() - 1.0) < 0.005 and abs(factors.std() - 0.4 / math.sqrt(12)) < 0.005
    assert ks_distance(factors, 0.8, 1.2) < 0.03
    # three steps: each comes first for about a third of the images (random order per image)
    params = A.ColorJitter(0.2, 0.2, 0.2).sample(n, 8, 8)
    first = torch.bincount(params["order"][:, 0], minlength=3).double() / n
    assert torch.allclose(first, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.03)
    for name in ("brightness", "contrast", "saturation"):
        assert 0.8 <= params[name].min() and params[name].max() <= 1.2


def test_random_erasing_matches_v2s_boxes_in_distribution():
    torch.manual_seed(0)
    n = 3000
    erasing = A.RandomErasing(p=0.5)
    params = erasing.sample(n, 32, 32)
    assert abs(params["erase"].double().mean() - 0.5) < 0.04
    top, left, h, w = params["box"].unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = (h * w).double() / 32 ** 2
    theirs = torch.tensor([math.prod(v2.RandomErasing.get_params(torch.zeros(3, 32, 32), (0.02, 0.33), (0.3, 3.3),
                                                                  [0.0])[2:4]) / 32 ** 2 for _ in range(n)])
    assert abs(area.mean() - theirs.mean()) < 0.01 and abs(area.std() - theirs.std()) < 0.01
    # exactly the box is set to the value, nothing else changes
    x = torch.rand(n, 3, 32, 32) + 1.0  # never 0 before erasing
    out = erasing.apply(x, params)
    erased = (out == 0).all(dim=1).sum(dim=(1, 2))
    assert torch.equal(erased, torch.where(params["erase"], h * w, 0))


def test_trivial_augment_draws_each_operation_equally_often_with_its_magnitudes():
    torch.manual_seed(0)
    ta = A.TrivialAugment(num_magnitude_bins=31, degrees=30)
    params = ta.sample(14_000, 32, 32)
    counts = torch.bincount(params["op"], minlength=len(ta.OPS)).double() / 14_000
    assert torch.allclose(counts, torch.full_like(counts, 1 / 14), atol=0.012)
    angle = ta.magnitude("rotate", params["level"], params["sign"])
    assert angle.min() == -30 and angle.max() == 30 and len(angle.unique()) == 61  # 31 levels × ± (0 once)
    bits = ta.magnitude("posterize", params["level"], params["sign"])
    assert set(bits.tolist()) == {2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0}


# --- every image its own draw; shape, dtype, device -----------------------------------------------

@pytest.mark.parametrize("transform", [A.RandomAffine(degrees=10, translate=[0.05, 0.05], scale=[0.95, 1.05]),
                                       A.ColorJitter(0.2, 0.2, 0.2), A.RandomErasing(p=1.0),
                                       A.TrivialAugment(num_magnitude_bins=1000)], ids=lambda t: type(t).__name__)
def test_each_transform_draws_for_every_image(transform):
    torch.manual_seed(0)
    out = transform((face(32).float() / 255).expand(16, -1, -1, -1)).flatten(1)
    distinct = (out[:, None] - out[None]).abs().amax(-1) > 1e-6
    if isinstance(transform, A.TrivialAugment):  # identity / autocontrast / equalize have no magnitude
        assert distinct.sum() > 16 * 10
    else:
        assert distinct.sum() == 16 * 15
    flips = A.RandomHorizontalFlip(0.5)((face(8).float() / 255).expand(16, -1, -1, -1))
    assert len({bytes(f.numpy()) for f in flips}) == 2  # flipped and not, within one batch


@pytest.mark.parametrize("recipe", ["basic", "strong"])
def test_copies_of_one_image_come_out_different(recipe):
    torch.manual_seed(0)
    augmenter = build_transform(aug_transforms(recipe))
    assert isinstance(augmenter, A.Compose)
    x = (face(32).float() / 255).expand(16, -1, -1, -1)
    out = augmenter(x)
    flat = out.flatten(1)
    same = (flat[:, None] - flat[None]).abs().amax(-1) < 1e-6
    assert same.sum() == 16  # only each image with itself
    assert out.shape == x.shape and out.dtype == torch.float32 and out.device == x.device
    assert 0 <= out.min() and out.max() <= 1
    assert torch.equal(x, (face(32).float() / 255).expand(16, -1, -1, -1))  # the input is left alone


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
@pytest.mark.parametrize("recipe", ["basic", "strong"])
def test_batch_preparer_output_shape_dtype_device(device, recipe):
    device = torch.device(device)
    prepare = BatchPreparer(PREP, device, build_transform(aug_transforms(recipe)), channels_last=True)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    out = prepare(x, train=True)
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32 and out.device.type == device.type
    assert out.is_contiguous(memory_format=torch.channels_last)
    # evaluation: no augmentation, the plain normalisation
    torch.testing.assert_close(prepare(x), BatchPreparer(PREP, device)(x))
    # cached features pass through untouched
    features = torch.randn(8, 16)
    assert torch.equal(prepare(features, train=True).cpu(), features)


def test_batch_preparer_normalises_the_augmented_batch():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    augmenter = build_transform(BASIC)
    torch.manual_seed(3)
    out = BatchPreparer(PREP, CPU, augmenter)(x, train=True)
    torch.manual_seed(3)
    expected = (augmenter(x.float() / 255) - torch.tensor(PREP.mean).view(1, 3, 1, 1)) / torch.tensor(
        PREP.std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)


# --- batched = per-image v2, in distribution ---------------------------------------------------------

def test_batched_basic_recipe_matches_the_per_image_v2_recipe_in_distribution():
    # v2 on float images: on uint8 every colour step of v2 truncates (a bias of about
    # -1.5/255 in brightness), which is v2's quantisation, not the recipe.
    n = 500
    x = face(32).expand(n, -1, -1, -1)
    per_image = v2.Compose([v2.RandomHorizontalFlip(0.5), v2.RandomAffine(10, (0.05, 0.05), (0.95, 1.05)),
                            v2.ColorJitter(0.2, 0.2, 0.2)])
    torch.manual_seed(0)
    theirs = torch.stack([per_image(image.float() / 255) for image in x])
    torch.manual_seed(1)
    ours = build_transform(aug_transforms("basic"))(x)

    def stats(batch):
        """Per image: mean and spread of the pixels, channel means, left-right balance,
        colourfulness (distance from grey) and sharpness (neighbour differences)."""
        half = batch.shape[-1] // 2
        grey = (batch * torch.tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return torch.stack([batch.mean(dim=(1, 2, 3)), batch.std(dim=(1, 2, 3)), *batch.mean(dim=(2, 3)).T,
                            batch[..., :half].mean(dim=(1, 2, 3)) - batch[..., half:].mean(dim=(1, 2, 3)),
                            (batch - grey).abs().mean(dim=(1, 2, 3)),
                            (batch[..., 1:] - batch[..., :-1]).abs().mean(dim=(1, 2, 3))], dim=1)

    a, b = stats(ours), stats(theirs)
    torch.testing.assert_close(a.mean(0), b.mean(0), atol=0.008, rtol=0)
    torch.testing.assert_close(a.std(0) / b.std(0), torch.ones(8), atol=0.1, rtol=0)  # e.g. no saturation: 0.8
    # the average augmented image on a 8×8 grid (where the patch lands, how dark the borders get) agrees too
    # (v2 against itself with other seeds: up to 0.015; a flip p of 0.2 instead of 0.5: 0.06)
    assert (F.avg_pool2d(ours.mean(0), 4) - F.avg_pool2d(theirs.mean(0), 4)).abs().mean() < 0.025


def test_the_naive_loops_basic_recipe_is_aug_basic_on_the_resized_image():
    # scripts/naive_train.py --aug basic is the reference the benchmark compares aug=basic with:
    # the same flip, affine and colour jitter, applied AFTER the resize to input_size (as
    # facecls, which augments the decoded input_size images), never to the larger source.
    import importlib.util

    spec = importlib.util.spec_from_file_location("naive_train", Path(CONF).parent / "scripts" / "naive_train.py")
    naive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(naive)
    steps = naive.transform(Preprocess(size=64), "basic").transforms
    assert [type(t).__name__ for t in steps] == ["Resize", "RandomHorizontalFlip", "RandomAffine", "ColorJitter",
                                                 "ToTensor", "Normalize"]
    assert list(steps[0].size) == [64, 64]
    flip, affine, jitter = steps[1:4]
    ours = build_transform(aug_transforms("basic")).transforms
    assert flip.p == ours[0].p
    assert tuple(affine.degrees) == ours[1].degrees and list(affine.translate) == ours[1].translate
    assert list(affine.scale) == ours[1].scale and affine.shear is None and ours[1].shear is None
    assert affine.interpolation.value == ours[1].interpolation and (affine.fill,) == ours[1].fill
    assert {name: tuple(getattr(jitter, name)) for name in ours[2].ranges} == ours[2].ranges and jitter.hue is None
    assert [type(t).__name__ for t in naive.transform(Preprocess(size=64), "none").transforms] == [
        "Resize", "ToTensor", "Normalize"]


# --- build_transform: batched or per image ---------------------------------------------------------------

def test_aug_none_builds_nothing_and_the_recipes_build_batched_augmenters(caplog):
    with caplog.at_level(logging.INFO, logger="facecls.data.batches"):
        assert build_transform(aug_transforms("none")) is None
        basic = build_transform(aug_transforms("basic"))
        strong = build_transform(aug_transforms("strong"))
    assert not caplog.records  # batched: nothing to say
    assert [type(t) for t in basic.transforms] == [A.RandomHorizontalFlip, A.RandomAffine, A.ColorJitter]
    assert basic.transforms[1].degrees == (-10.0, 10.0) and basic.transforms[1].translate == [0.05, 0.05]
    assert basic.transforms[2].ranges == {"brightness": (0.8, 1.2), "contrast": (0.8, 1.2),
                                          "saturation": (0.8, 1.2)}
    assert [type(t) for t in strong.transforms] == [A.RandomHorizontalFlip, A.TrivialAugment, A.RandomErasing]


def test_a_v2_transform_runs_per_image_and_says_so_in_one_line(caplog):
    recipe = [BASIC[0], {"_target_": "torchvision.transforms.v2.RandomAffine", "degrees": 10},
              {"_target_": "torchvision.transforms.v2.GaussianBlur", "kernel_size": 3}]
    with caplog.at_level(logging.INFO, logger="facecls.data.batches"):
        transform = build_transform(recipe)
    assert isinstance(transform, v2.Compose) and isinstance(transform.transforms[1], v2.RandomAffine)
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "\n" not in line and "one image at a time" in line and "per epoch" in line
    assert "torchvision.transforms.v2.RandomAffine, torchvision.transforms.v2.GaussianBlur" in line
    assert "facecls.data.augment.RandomAffine" in line  # the batched version to use instead
    # per image on uint8, the batched flip wrapped for one image
    torch.manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    out = BatchPreparer(PREP, CPU, transform)(x, train=True)
    assert out.shape == x.shape and out.dtype == torch.float32
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="facecls.data.batches"):
        build_transform(recipe, explain=False)
    assert not caplog.records


# --- reproducible and resumable from torch's global RNG ------------------------------------------------

@pytest.mark.parametrize("recipe", ["basic", "strong"])
def test_same_seed_same_batch_other_seed_other_batch_and_resume_repeats(recipe):
    prepare = BatchPreparer(PREP, CPU, build_transform(aug_transforms(recipe)))
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)

    def run(seed):
        torch.manual_seed(seed)
        return prepare(x, train=True)

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    # resume: the saved global RNG state replays the next batch exactly (what a checkpoint restores)
    torch.manual_seed(0)
    prepare(x, train=True)
    state = torch.get_rng_state()
    after = prepare(x, train=True)
    torch.set_rng_state(state)
    assert torch.equal(prepare(x, train=True), after)


def test_cpu_preparation_runs_on_one_thread_and_gives_the_threads_back():
    seen = []

    class Spy(A.BatchTransform):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return x

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
        out = BatchPreparer(PREP, CPU, Spy())(x, train=True)
        assert seen == [1] and torch.get_num_threads() == 2
        torch.testing.assert_close(out, BatchPreparer(PREP, CPU, threads=None)(x))  # same values, any threads
        BatchPreparer(PREP, CPU, Spy(), threads=None)(x, train=True)
        assert seen == [1, 2]
    finally:
        torch.set_num_threads(before)

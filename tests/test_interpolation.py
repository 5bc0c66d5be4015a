"""The resize filter comes from the pretrained weights (bicubic for EfficientNet, Swin, the SWAG
ViTs…): Preprocess.interpolation, the decoded pixels, the pixel cache key, old checkpoints."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from matplotlib import cbook
from PIL import Image
from torchvision.models import EfficientNet_B0_Weights, ResNet18_Weights
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from facecls.data.decode import Preprocess, cache_key, decode_images
from facecls.errors import UserError
from facecls.models.backbones import preprocess_of
from facecls.models.pretrained import weights_preprocess


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A real photo (matplotlib's Grace Hopper, 512×600), saved losslessly so no JPEG draft
    decoding comes between the pixels and the resize."""
    folder = tmp_path_factory.mktemp("photo")
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        image.convert("RGB").save(folder / "hopper.png")
    return folder


def test_the_weights_say_which_filter():
    assert EfficientNet_B0_Weights.IMAGENET1K_V1.transforms().interpolation == InterpolationMode.BICUBIC
    assert weights_preprocess(EfficientNet_B0_Weights.IMAGENET1K_V1).interpolation == "bicubic"
    assert weights_preprocess(ResNet18_Weights.IMAGENET1K_V1, 32).interpolation == "bilinear"
    assert preprocess_of("efficientnet_b0", None, 32).interpolation == "bicubic"  # random init: DEFAULT's
    assert preprocess_of("vit_b_16", "IMAGENET1K_SWAG_LINEAR_V1", None).interpolation == "bicubic"
    assert preprocess_of("vit_b_16", "IMAGENET1K_V1", None).interpolation == "bilinear"
    assert Preprocess(size=16).interpolation == "bilinear"  # convnet/mlp squash bilinearly
    with pytest.raises(UserError, match="unknown resize interpolation 'cubic'"):
        Preprocess(size=16, interpolation="cubic")


def test_decoding_resizes_with_the_weights_filter_as_torchvision_does(photo):
    weights = EfficientNet_B0_Weights.IMAGENET1K_V1
    prep = weights_preprocess(weights)  # resize 256 bicubic, crop 224
    decoded = decode_images(photo, ["hopper.png"], prep, None, progress=False)[0][0]
    bilinear = decode_images(photo, ["hopper.png"], Preprocess(**{**prep.__dict__, "interpolation": "bilinear"}),
                             None, progress=False)[0][0]
    with Image.open(photo / "hopper.png") as image:
        image = image.convert("RGB")
        own = TF.pil_to_tensor(TF.center_crop(TF.resize(image, 256, interpolation=InterpolationMode.BICUBIC,
                                                        antialias=True), [224, 224]))
        reference = weights.transforms()(TF.pil_to_tensor(image))  # torchvision's own preprocessing (tensors)
    assert torch.equal(decoded, own)  # exactly PIL's bicubic (antialiased), which decoding uses
    # torchvision's own weights.transforms() (its tensor bicubic) agrees to within a grey level almost
    # everywhere (rounding of bicubic overshoot at sharp edges aside); the old bilinear pixels did not.
    mean, std = torch.tensor(prep.mean).view(3, 1, 1), torch.tensor(prep.std).view(3, 1, 1)
    target = (reference * std + mean) * 255  # back to grey levels
    for pixels, close in ((decoded, True), (bilinear, False)):
        off = (pixels.float() - target).abs()
        rare = (off > 1.5).float().mean()  # the share of pixels more than one grey level off
        assert (off.mean() < 0.3 and rare < 0.005) == close, (off.mean(), rare)


def test_the_pixel_cache_key_covers_the_filter_and_keeps_old_bilinear_keys(photo):
    bilinear = Preprocess(size=64, resize=73)
    bicubic = Preprocess(size=64, resize=73, interpolation="bicubic")
    assert cache_key(photo, ["hopper.png"], bilinear) != cache_key(photo, ["hopper.png"], bicubic)
    # A checkpoint written before the option existed: its preprocess dict has no interpolation.
    old = {"size": 64, "resize": 73, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    assert Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in old.items()}) == bilinear

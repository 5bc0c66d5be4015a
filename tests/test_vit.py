"""Models built for one image size (torchvision's VisionTransformer) at other input sizes:
built for model.input_size, pretrained position embeddings interpolated, a size that is not a
multiple of the patch size refused in one line. Random weights only (nothing is downloaded)."""
from __future__ import annotations

import pytest
import torch
from torchvision.models import get_model
from torchvision.models.vision_transformer import interpolate_embeddings

from facecls.errors import UserError
from facecls.models.backbones import size_argument
from facecls.models.catalog import node_shapes
from facecls.models.feature_extractor import FeatureExtractor
from facecls.models.finetune import Finetune

pytestmark = pytest.mark.usefixtures("no_downloads")


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    """A torchvision-format state_dict of vit_b_16 at its own 224 px (seeded random weights)."""
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("weights") / "vit_b_16.pth"
    torch.save(get_model("vit_b_16", weights=None).state_dict(), path)
    return path


def test_the_size_argument_is_found_from_the_constructor():
    assert size_argument("vit_b_16").name == "image_size" and size_argument("maxvit_t").name == "input_size"
    assert size_argument("resnet18") is None and size_argument("swin_t") is None


def test_a_224_state_dict_fills_a_64_px_vit_with_interpolated_position_embeddings(vit_file):
    state = torch.load(vit_file, weights_only=True)
    model = Finetune(num_classes=3, name="vit_b_16", weights_path=str(vit_file), input_size=64)
    own = model.net.state_dict()
    assert model.net.image_size == 64 and tuple(own["encoder.pos_embedding"].shape) == (1, 17, 768)  # 4×4 + class
    expected = interpolate_embeddings(64, 16, dict(state))["encoder.pos_embedding"]
    assert torch.equal(own["encoder.pos_embedding"], expected)
    assert torch.equal(own["encoder.pos_embedding"][:, 0], state["encoder.pos_embedding"][:, 0])  # class token's
    assert all(torch.equal(own[k], v) for k, v in state.items() if k != "encoder.pos_embedding" and "heads" not in k)
    assert tuple(model(torch.rand(2, 3, 64, 64)).shape) == (2, 3)


def test_a_size_off_the_patch_grid_is_one_line_naming_the_patch_and_the_nearest_sizes():
    with pytest.raises(UserError) as err:
        FeatureExtractor(num_classes=3, name="vit_b_16", weights=None, input_size=100)
    message = str(err.value)
    assert "\n" not in message
    assert message == ("model.input_size=100 does not fit: vit_b_16 takes multiples of its patch size 16 — "
                       "use 96 or 112, or null for the weights' own 224.")
    with pytest.raises(UserError, match="input_size=40 does not fit: vit_b_32 .* patch size 32 — use 32 or 64"):
        node_shapes("vit_b_32", input_size=40)


def test_models_lists_vit_nodes_with_shapes_at_any_patch_multiple():
    at_32 = dict(node_shapes("vit_b_16", input_size=32))
    assert at_32["conv_proj"] == "768×2×2" and at_32["encoder"] == "5×768" and at_32["heads"] == "1000"
    assert dict(node_shapes("vit_b_16"))["encoder"] == "197×768"


def test_a_vit_feature_extractor_at_32_px_trains_and_evaluates_like_its_checkpoint(vit_file, compose_train,
                                                                                   tmp_path):
    from facecls.inference.evaluate import evaluate
    from facecls.inference.loading import load_run
    from facecls.training.run import run_training

    # best.pt only: it is what the test reads, and each checkpoint of the 86 M-parameter ViT is ~340 MB to write
    cfg = compose_train("model=feature_extractor", "model.name=vit_b_16", f"model.weights_path={vit_file}",
                        "model.input_size=32", "trainer.max_epochs=1", "trainer.checkpoint.last=false")
    metrics = run_training(cfg, tmp_path / "run")
    saved = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert tuple(saved["model"]["backbone.body.encoder.pos_embedding"].shape) == (1, 5, 768)
    run = load_run(tmp_path / "run" / "checkpoints" / "best.pt", "cpu", cache_dir=cfg.paths.cache_dir)
    test = evaluate(run.model, run.data.test, run.prepare, run.eval_settings())  # rebuilt at 32 px, no weights file
    assert test["acc"] == metrics["test_acc"] and test["loss"] == pytest.approx(metrics["test_loss"], rel=1e-5)


def test_a_randomly_initialised_vit_finetunes_at_32_px(compose_train, tmp_path):
    from facecls.training.run import run_training

    cfg = compose_train("model=finetune", "model.name=vit_b_16", "model.weights=null", "model.input_size=32",
                        "trainer.max_epochs=1", "model.freeze=encoder.layers.encoder_layer_9",
                        "trainer.checkpoints=false")  # the test reads metrics only: no ~340 MB checkpoints to write
    metrics = run_training(cfg, tmp_path / "run")
    assert metrics["trainable_params"] < 86e6 / 4  # two encoder layers, the last norm and the new head

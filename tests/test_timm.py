"""model.source=timm: timm's models as backbones of model=feature_extractor|finetune and in
`facecls models` — names, tags, preprocessing from pretrained_cfg, weights files, cutting,
freezing, the feature-cache identity, runs, and `facecls eval` of one.

Nothing is downloaded: timm's tiny test models (test_resnet, test_convnext, test_vit: ~0.5 M
parameters) with random weights or state_dicts the tests save; FACECLS_OFFLINE=1, empty caches.
"""
from __future__ import annotations

import pytest
import torch

from facecls.errors import UserError

from helpers import cli_env, read_json, run_cli

timm = pytest.importorskip("timm")

from facecls.models.feature_extractor import FeatureExtractor  # noqa: E402
from facecls.models.finetune import Finetune  # noqa: E402

TIMM = ["model.source=timm", "model.input_size=32", "trainer.max_epochs=1"]


@pytest.fixture(autouse=True)
def offline(no_downloads, tmp_path, monkeypatch):
    """no_downloads, and huggingface_hub (imported already) told about its empty cache too."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def state_files(tmp_path_factory):
    """timm-format state_dicts (seeded random weights) of the test models at their own 160 px:
    .pth for test_resnet/test_convnext, .safetensors for test_vit."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("timm-weights")
    files = {}
    for i, name in enumerate(["test_resnet", "test_convnext", "test_vit"]):
        torch.manual_seed(200 + i)
        state = timm.create_model(name).state_dict()
        files[name] = folder / (f"{name}.safetensors" if name == "test_vit" else f"{name}.pth")
        if name == "test_vit":
            save_file(state, files[name])
        else:
            torch.save(state, files[name])
    return files


def load(path) -> dict:
    from facecls.models.pretrained import read_state_dict

    return read_state_dict(path)


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# --- names, weights tags, preprocessing ------------------------------------------------------------

def test_unknown_names_and_tags_are_one_line_with_close_matches():
    with pytest.raises(UserError) as err:
        FeatureExtractor(num_classes=3, name="convnxt_tiny", weights=None, source="timm")
    message = one_line(err)
    assert message.startswith("unknown model.name 'convnxt_tiny' for model.source=timm — did you mean convnext_tiny")
    assert "filter='convnext*'" in message and len(message) < 300  # a few suggestions, not 1,300 names
    with pytest.raises(UserError) as err:
        Finetune(num_classes=3, name="resnet18.a1_in1k", source="timm")
    assert "use model.name=resnet18 model.weights=a1_in1k" in one_line(err)
    with pytest.raises(UserError) as err:
        FeatureExtractor(num_classes=3, name="resnet18", weights="a9_in1k", source="timm")
    assert "choose one of: DEFAULT, a1_in1k, a2_in1k" in one_line(err) and "tv_in1k" in str(err.value)
    with pytest.raises(UserError, match="model.source=ti is invalid — choose one of: torchvision, timm"):
        FeatureExtractor(num_classes=3, name="resnet18", weights=None, source="ti")


def test_preprocessing_comes_from_the_tags_pretrained_cfg_as_timms_own_transform(tmp_path):
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from facecls.data.decode import load_image
    from facecls.models.backbones import preprocess_of

    prep = preprocess_of("test_convnext", "DEFAULT", None, "timm")  # bicubic, crop_pct 0.95, mean/std 0.5
    assert (prep.size, prep.resize, prep.interpolation, prep.mean, prep.std) == (160, 168, "bicubic", (0.5,) * 3,
                                                                                  (0.5,) * 3)
    assert preprocess_of("test_convnext", None, 32, "timm").resize == 33  # floor(32 / 0.95); random init: DEFAULT's
    tv = preprocess_of("resnet18", "tv_in1k", None, "timm")
    assert (tv.size, tv.resize, tv.interpolation) == (224, 256, "bilinear")
    a1 = preprocess_of("resnet18", "a1_in1k", None, "timm")
    assert (a1.size, a1.resize, a1.interpolation) == (224, 235, "bicubic")
    assert preprocess_of("vit_small_patch16_224", "augreg_in21k_ft_in1k", None, "timm").resize == 248  # crop_pct .9

    # The decoded pixels match timm's own eval transform for that config (PIL resize both ways).
    torch.manual_seed(0)
    image = Image.fromarray((torch.rand(90, 130, 3) * 255).to(torch.uint8).numpy())
    path = tmp_path / "photo.png"
    image.save(path)
    net = timm.create_model("test_convnext")
    expected = create_transform(**resolve_data_config({}, model=net))(image)  # normalised with mean/std 0.5
    ours = (load_image(path, prep).float() / 255 - 0.5) / 0.5
    assert ours.shape == expected.shape == (3, 160, 160)
    assert (ours - expected).abs().max() <= 2 / 255 / 0.5 + 1e-6


# --- weights ---------------------------------------------------------------------------------------

def test_weights_path_round_trip_resamples_vit_positions_and_wrong_files_are_one_line(state_files):
    from timm.layers import resample_abs_pos_embed

    state = load(state_files["test_vit"])  # a .safetensors file at 160 px (10×10 patches + class token)
    model = FeatureExtractor(num_classes=3, name="test_vit", weights_path=str(state_files["test_vit"]),
                             cut="blocks.1", input_size=32, source="timm")
    own = model.backbone.body.state_dict()
    assert tuple(own["pos_embed"].shape) == (1, 5, 64)  # built for 32 px: 2×2 patches + class token
    assert torch.equal(own["pos_embed"], resample_abs_pos_embed(state["pos_embed"], (2, 2), num_prefix_tokens=1))
    assert all(torch.equal(v, state[k]) for k, v in own.items() if k != "pos_embed")
    finetune = Finetune(num_classes=3, name="test_resnet", weights_path=str(state_files["test_resnet"]),
                        input_size=32, source="timm")
    kept = {k: v for k, v in finetune.net.state_dict().items() if not k.startswith("fc.")}
    resnet = load(state_files["test_resnet"])
    assert kept and all(torch.equal(v, resnet[k]) for k, v in kept.items())
    with pytest.raises(UserError) as err:
        Finetune(num_classes=3, name="test_convnext", weights_path=str(state_files["test_resnet"]), source="timm")
    assert "do not fit timm's test_convnext" in one_line(err) and "test_resnet.pth" in str(err.value)
    with pytest.raises(UserError) as err:  # offline, nothing cached: what to get and where
        FeatureExtractor(num_classes=3, name="test_convnext", source="timm")
    message = one_line(err)
    assert "hf download timm/test_convnext.r160_in1k" in message and "hf-cache" in message
    assert "model.weights_path=/path/to/model.safetensors" in message


# --- cut, freeze, the classifier, the feature cache ------------------------------------------------

def test_cuts_penultimate_and_the_feature_cache_identity():
    vit = FeatureExtractor(num_classes=3, name="test_vit", weights=None, input_size=32, source="timm")
    assert vit.backbone.node == "head" and vit.feature_shape == (64,)  # the input of timm's classifier
    stage = FeatureExtractor(num_classes=3, name="test_convnext", weights=None, cut="stages.1", pool="none",
                             input_size=32, source="timm")
    assert stage.backbone.node.startswith("stages.1.") and len(stage.feature_shape) == 3
    identity = stage.feature_identity()
    assert identity == {"model": "test_convnext", "weights": "None", "cut": "stages.1", "node": stage.backbone.node,
                        "pool": "none", "source": "timm"}
    torchvision = FeatureExtractor(num_classes=3, name="resnet18", weights=None, input_size=32)
    assert "source" not in torchvision.feature_identity()  # torchvision runs keep their cache keys
    with pytest.raises(UserError) as err:
        FeatureExtractor(num_classes=3, name="test_resnet", weights=None, cut="layer9", input_size=32, source="timm")
    assert "choose one of: conv1, layer1.0, layer1, " in one_line(err) and "global_pool, penultimate" in str(err.value)
    assert "(every node: facecls models source=timm name=test_resnet)" in str(err.value)


def test_models_lists_timm_names_and_nodes_with_shapes(capsys):
    from omegaconf import OmegaConf

    from facecls.commands.models import main
    from facecls.models.catalog import node_shapes

    rows = main(OmegaConf.create({"source": "timm", "filter": "convnext_t*", "name": None, "weights": "DEFAULT",
                                  "input_size": None}))
    assert [b.name for b in rows] == ["convnext_tiny", "convnext_tiny_hnf"]
    assert "fb_in22k_ft_in1k" in capsys.readouterr().out
    shapes = dict(node_shapes("test_resnet", input_size=32, source="timm"))
    assert shapes["layer4"] == "96×1×1" and shapes["fc"] == "1000" and shapes["maxpool"] == "32×8×8"


# --- runs ------------------------------------------------------------------------------------------

def test_finetune_run_keeps_the_frozen_stage_and_trains_the_rest(state_files, compose_train, tmp_path):
    from facecls.training.run import run_training

    cfg = compose_train("model=finetune", "model.name=test_convnext", "model.freeze=stages.1",
                        f"model.weights_path={state_files['test_convnext']}", "model.backbone_lr_mult=0.5", *TIMM)
    run_training(cfg, tmp_path / "run")
    model = Finetune(num_classes=3, name="test_convnext", weights=None, freeze="stages.1", input_size=32,
                     source="timm")
    frozen = set(model.frozen)
    assert any(k.startswith("stem.") for k in frozen) and any(k.startswith("stages.1.") for k in frozen)
    assert not any(k.startswith("stages.2.") for k in frozen)
    state = load(state_files["test_convnext"])
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    trained = {k.removeprefix("net."): v for k, v in last["model"].items()}
    assert model.classifier_name == "head.fc" and tuple(trained["head.fc.weight"].shape) == (3, 64)
    for key, _ in model.net.named_parameters():
        if not key.startswith("head.fc."):
            assert torch.equal(trained[key], state[key]) == (key in frozen), f"{key} frozen={key in frozen}"
    assert [g["lr"] for g in last["optimizer"]["param_groups"]] == pytest.approx([1e-3, 5e-4])


def test_cli_feature_extractor_run_is_frozen_and_eval_reproduces_test_acc(state_files, compose_train, tmp_path):
    from facecls.training.run import run_training

    # trained in-process (the CLI's config, composed: one Python start less), evaluated by the CLI
    cfg = compose_train("model=feature_extractor", "model.name=test_resnet",
                        f"model.weights_path={state_files['test_resnet']}", *TIMM)
    run_dir = tmp_path / "run"
    run_training(cfg, run_dir)
    env = dict(cli_env(cfg.paths.cache_dir), FACECLS_OFFLINE="1", TORCH_HOME=str(tmp_path / "torch-home"),
               HF_HUB_CACHE=str(tmp_path / "hf-cache"))
    state = load(state_files["test_resnet"])
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    backbone = {k.removeprefix("backbone.body."): v for k, v in saved.items() if k.startswith("backbone.")}
    assert set(backbone) == {k for k in state if not k.startswith("fc.")}  # cut before timm's classifier
    assert all(torch.equal(v, state[k]) for k, v in backbone.items())  # bit-identical, BN buffers too
    run_cli("eval", f"ckpt={run_dir / 'checkpoints' / 'best.pt'}", cwd=tmp_path, env=env)  # no weights file needed
    assert read_json(run_dir / "eval.json")["test_acc"] == read_json(run_dir / "metrics.json")["test_acc"]

"""Transfer learning from any torchvision backbone (model=feature_extractor, model=finetune) and
`facecls models`: names, cuts, freezing, weights files, the feature cache, eval and the CLI.

No network: models use model.weights=null / pretrained=False, or a state_dict the tests save
and pass as model.weights_path. Runs use 32 px inputs (tiny_faces) and one epoch.
"""
from __future__ import annotations

import logging

import pytest
import torch
from torchvision.models import get_model

from facecls.errors import UserError
from facecls.models.backbone_graph import classifier_node, graph_nodes
from facecls.models.feature_extractor import FeatureExtractor
from facecls.models.finetune import Finetune

from helpers import TINY, cli_env, read_json, run_cli

BACKBONES = ["resnet18", "mobilenet_v3_small", "efficientnet_b0"]
# A stage to freeze in each (ResNet's layer2; the MobileNet/EfficientNet block of similar depth).
FREEZE = {"resnet18": "layer2", "mobilenet_v3_small": "features.2", "efficientnet_b0": "features.2"}
SMALL = ["model.input_size=32", "trainer.max_epochs=1"]
# The runs below, per backbone. efficientnet_b0's two took ~25 s: slow, as mobilenet_v3_small's runs
# take the same path (a classifier inside a Sequential, a features.N block frozen).
RUNS = ["resnet18", "mobilenet_v3_small", pytest.param("efficientnet_b0", marks=pytest.mark.slow)]


pytestmark = pytest.mark.usefixtures("no_downloads")  # nothing here may fetch ImageNet weights


@pytest.fixture(scope="module")
def state_files(tmp_path_factory):
    """A torchvision-format state_dict per backbone (seeded random weights, not ImageNet)."""
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for i, name in enumerate(BACKBONES):
        torch.manual_seed(100 + i)
        files[name] = folder / f"{name}.pth"
        torch.save(get_model(name, weights=None).state_dict(), files[name])
    return files


# --- names, cuts, classifiers, sizes ----------------------------------------------------------

def test_the_classifier_is_found_generically_and_penultimate_is_its_input():
    classifiers = {"resnet18": "fc", "mobilenet_v3_small": "classifier.3", "efficientnet_b0": "classifier.1"}
    for name, layer in classifiers.items():
        net = get_model(name, weights=None)
        node, linear = classifier_node(net, graph_nodes(net))
        assert node == layer, name
        model = FeatureExtractor(num_classes=3, name=name, weights=None, input_size=32)
        assert model.feature_shape == (linear.in_features,), name
        finetune = Finetune(num_classes=3, name=name, weights=None, input_size=32)
        assert finetune.net.get_submodule(layer).out_features == 3
        assert tuple(finetune(torch.rand(2, 3, 32, 32)).shape) == (2, 3)


def test_named_cuts_pool_and_aliases():
    layer3 = FeatureExtractor(num_classes=3, name="resnet18", weights=None, cut="layer3", input_size=32)
    assert layer3.backbone.node == "layer3.1.relu_1" and layer3.feature_shape == (256,)  # avg-pooled
    flat = FeatureExtractor(num_classes=3, name="resnet18", weights=None, cut="layer3", pool="none", input_size=32)
    assert flat.feature_shape == (256, 2, 2) and flat.head[1].in_features == 256 * 2 * 2
    stem = FeatureExtractor(num_classes=3, name="resnet18", weights=None, cut="stem", input_size=32)
    assert stem.backbone.node == "maxpool"
    conv4 = FeatureExtractor(num_classes=3, name="alexnet", weights=None, cut="conv4", pool="none", input_size=64)
    assert conv4.backbone.node == "features.9" and conv4.feature_shape == (256, 3, 3)  # as AlexNetFeature's conv4


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_unknown_names_and_too_small_inputs_are_one_line_errors_listing_the_choices():
    with pytest.raises(UserError) as err:
        FeatureExtractor(num_classes=3, name="resnet17", weights=None)
    assert "unknown model.name 'resnet17' — choose one of: alexnet," in one_line(err) and "resnet18" in str(err.value)
    with pytest.raises(UserError) as err:
        FeatureExtractor(num_classes=3, name="resnet18", weights=None, cut="layer9", input_size=32)
    assert "unknown model.cut 'layer9' for resnet18 — choose one of: stem, " in one_line(err)
    assert "layer3" in str(err.value) and "penultimate" in str(err.value)
    with pytest.raises(UserError) as err:
        Finetune(num_classes=3, name="resnet18", weights=None, freeze="layer9")
    assert "unknown model.freeze 'layer9'" in one_line(err) and "penultimate" not in str(err.value)
    with pytest.raises(UserError) as err:
        FeatureExtractor(num_classes=3, name="resnet18", weights="IMAGENET9K")
    assert "choose one of: DEFAULT, IMAGENET1K_V1" in one_line(err)
    with pytest.raises(UserError) as err:
        FeatureExtractor(num_classes=3, name="alexnet", weights=None, input_size=40)
    assert "model.input_size=40 is too small for alexnet up to penultimate — use model.input_size >= 63" \
        in one_line(err)
    with pytest.raises(UserError) as err:  # ViT is built for any multiple of its patch size (tests/test_vit.py)
        Finetune(num_classes=3, name="vit_b_16", weights=None, input_size=72)
    assert "patch size 16 — use 64 or 80" in one_line(err)


def test_freeze_takes_the_node_and_every_parameter_before_it():
    model = Finetune(num_classes=3, name="resnet18", weights=None, freeze="layer2", input_size=32)
    expected = {n for n, _ in model.net.named_parameters() if n.split(".")[0] in ("conv1", "bn1", "layer1", "layer2")}
    assert set(model.frozen) == expected
    assert all(p.requires_grad == (n not in expected) for n, p in model.net.named_parameters())
    model.train()
    assert not model.net.layer2[1].bn2.training and model.net.layer3[0].bn1.training  # frozen BN stats stay
    head, rest = model.param_groups(1e-3)
    assert head["params"] == list(model.net.fc.parameters()) and rest["lr"] == pytest.approx(1e-3)


# --- weights ------------------------------------------------------------------------------------

def test_weights_path_round_trip_and_a_wrong_architecture(state_files, tmp_path):
    state = torch.load(state_files["resnet18"], weights_only=True)
    feature = FeatureExtractor(num_classes=3, name="resnet18", cut="layer2", weights_path=str(state_files["resnet18"]),
                               input_size=32)
    for key, value in feature.backbone.body.state_dict().items():
        assert torch.equal(value, state[key]), key
    finetune = Finetune(num_classes=3, name="resnet18", weights_path=str(state_files["resnet18"]), input_size=32)
    own = finetune.net.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("fc."))
    with pytest.raises(UserError) as err:
        Finetune(num_classes=3, name="resnet18", weights_path=str(state_files["mobilenet_v3_small"]))
    assert "do not fit this model" in one_line(err) and "mobilenet_v3_small.pth" in str(err.value)


def test_no_weights_anywhere_says_which_file_to_get():
    with pytest.raises(UserError) as err:
        FeatureExtractor(num_classes=3, name="resnet18")
    message = one_line(err)
    assert "https://download.pytorch.org/models/resnet18-" in message and "torch-home" in message


# --- runs: frozen backbone, feature cache, eval, finetune --------------------------------------

@pytest.mark.parametrize("name", RUNS)
def test_feature_extractor_run_is_frozen_cached_and_scores_like_eval(name, state_files, compose_train, tmp_path,
                                                                     caplog):
    from facecls.data import features
    from facecls.inference.evaluate import evaluate
    from facecls.inference.loading import load_run
    from facecls.training.run import run_training

    cfg = compose_train("model=feature_extractor", f"model.name={name}", f"model.weights_path={state_files[name]}",
                        "model.cut=stem" if name == "resnet18" else "model.cut=penultimate", *SMALL)
    metrics = run_training(cfg, tmp_path / "first")
    state = torch.load(state_files[name], weights_only=True)
    saved = torch.load(tmp_path / "first" / "checkpoints" / "last.pt", weights_only=True)["model"]
    backbone = {k.removeprefix("backbone.body."): v for k, v in saved.items() if k.startswith("backbone.")}
    assert backbone and all(torch.equal(v, state[k]) for k, v in backbone.items())  # buffers too
    assert metrics["trainable_params"] == sum(v.numel() for k, v in saved.items() if k.startswith("head."))

    features._recent.clear()  # as in a new process: only the disk cache can help
    with caplog.at_level(logging.INFO, logger="facecls.data.features"):
        run_training(cfg, tmp_path / "second")
    assert "Backbone features: loaded from cache" in caplog.text

    run = load_run(tmp_path / "first" / "checkpoints" / "best.pt", "cpu", cache_dir=cfg.paths.cache_dir)
    test = evaluate(run.model, run.data.test, run.prepare, run.eval_settings())
    assert test["acc"] == metrics["test_acc"] and test["loss"] == pytest.approx(metrics["test_loss"], rel=1e-5)


@pytest.mark.parametrize("name", RUNS)
def test_finetune_run_keeps_frozen_parameters_and_trains_the_rest(name, state_files, compose_train, tmp_path):
    from facecls.training.run import run_training

    cfg = compose_train("model=finetune", f"model.name={name}", f"model.weights_path={state_files[name]}",
                        f"model.freeze={FREEZE[name]}", "model.backbone_lr_mult=0.5", *SMALL)
    run_training(cfg, tmp_path / "run")
    model = Finetune(num_classes=3, name=name, weights=None, freeze=FREEZE[name], input_size=32)
    frozen = set(model.frozen)
    state = torch.load(state_files[name], weights_only=True)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    trained = {k.removeprefix("net."): v for k, v in last["model"].items()}
    assert frozen
    for key, _ in model.net.named_parameters():
        if key.startswith(f"{model.classifier_name}."):
            continue
        assert torch.equal(trained[key], state[key]) == (key in frozen), f"{key} frozen={key in frozen}"
    assert [g["lr"] for g in last["optimizer"]["param_groups"]] == pytest.approx([1e-3, 5e-4])


# --- the CLI ------------------------------------------------------------------------------------

def test_cli_models_lists_backbones_and_resnet18_nodes(tmp_path):
    env = dict(cli_env(tmp_path / "cache"), FACECLS_OFFLINE="1")
    nodes = run_cli("models", "name=resnet18", cwd=tmp_path, env=env).stdout
    rows = {cells[0]: cells[-1] for cells in map(str.split, nodes.splitlines()[1:]) if len(cells) >= 2}
    assert rows["layer3"] == "256×14×14" and rows["layer4"] == "512×7×7" and rows["fc"] == "1000"
    assert "stem (= maxpool)" in nodes
    from facecls.models.catalog import node_shapes

    assert ("layer3", "256×2×2") in node_shapes("resnet18", input_size=32)  # shapes follow input_size=


@pytest.mark.slow  # three CLI processes (~25 s on two cores); the in-process runs above cover the same code
def test_cli_train_then_eval_and_one_line_errors(tmp_path, tiny_faces):
    env = dict(cli_env(tmp_path / "cache"), FACECLS_OFFLINE="1", TORCH_HOME=str(tmp_path / "torch-home"))
    run_dir = tmp_path / "run"
    run_cli("train", "data=imagefolder", f"data.root={tiny_faces}", *TINY, "model=feature_extractor",
            "model.name=mobilenet_v3_small", "model.weights=null", "model.cut=features.3", "model.input_size=32",
            f"hydra.run.dir={run_dir}", cwd=tmp_path, env=env)
    run_cli("eval", f"ckpt={run_dir / 'checkpoints' / 'best.pt'}", cwd=tmp_path, env=env)
    assert read_json(run_dir / "eval.json")["test_acc"] == read_json(run_dir / "metrics.json")["test_acc"]
    proc = run_cli("train", "data=imagefolder", f"data.root={tiny_faces}", *TINY, "model=finetune",
                   "model.name=resnet18", "model.weights=null", "model.freeze=layer5",
                   f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path, env=env, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert errors[0].startswith("facecls: error: unknown model.freeze 'layer5' for resnet18 — choose one of: stem")


def test_gradcam_uses_the_last_conv_before_the_cut_and_guided_backprop_refuses_hardswish():
    from facecls.inspect.attribution import gradcam, guided_backprop, last_conv

    x = torch.rand(1, 3, 32, 32)
    model = FeatureExtractor(num_classes=3, name="resnet18", weights=None, cut="layer2", input_size=32).eval()
    assert last_conv(model, x) is model.backbone.body.get_submodule("layer2.1.conv2")
    mobile = FeatureExtractor(num_classes=3, name="mobilenet_v3_small", weights=None, input_size=32).eval()
    with pytest.raises(UserError, match="guided backprop only guides ReLUs .* Hardswish"):
        guided_backprop(mobile, x, 0)
    cam, guided = gradcam(mobile, x, 0)
    assert cam.shape == (1, 1, 32, 32) and guided is None  # Grad-CAM still works; its guided panel is left out

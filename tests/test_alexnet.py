"""AlexNet transfer learning — the presets model=alexnet_feature / alexnet_finetune of the general
models: cut shapes, offline weights, frozen layers, the feature cache, CLI runs.

No network: models use pretrained=false or a state_dict the tests save and pass as
model.weights_path. Inputs are 64 px (model.input_size=64) except for the 224 shape checks.
The presets' parity with the classes they replaced is in test_alexnet_parity.py.
"""
from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision.models import AlexNet_Weights, alexnet

from facecls.config.compose import compose
from facecls.errors import UserError
from facecls.models import build_model, preprocess_for
from facecls.models.pretrained import torchvision_cache_path, weights_preprocess

from helpers import TINY, cli_env, read_history, read_json, run_cli

SMALL = ["model.input_size=64", "model.head=[32]"]
FILE_NAME = "alexnet-owt-7be5be79.pth"  # the name torchvision's weights URL gives the file
# The AlexNet blocks model.freeze names → the torchvision module holding their weights.
BLOCKS = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.8",
          "conv5": "features.10", "fc6": "classifier.1", "fc7": "classifier.4"}


def preset(name: str, **options):
    """conf/model/<name>.yaml as `facecls train model=<name> model.<k>=<v>…` composes it."""
    overrides = [f"model={name}"]
    for key, value in options.items():
        overrides.append(f"model.{key}={'null' if value is None else value}")
    return compose("train", overrides).model


def AlexNetFeature(num_classes: int, **options):  # noqa: N802 — reads like the class it replaced
    return build_model(preset("alexnet_feature", **options), num_classes)


def AlexNetFinetune(num_classes: int, **options):  # noqa: N802
    return build_model(preset("alexnet_finetune", **options), num_classes)


@pytest.fixture(scope="module")
def state_file(tmp_path_factory):
    """A torchvision-format AlexNet state_dict on disk (seeded random weights, not ImageNet)."""
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / FILE_NAME
    torch.save(alexnet().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def state(state_file):
    return torch.load(state_file, weights_only=True)


@pytest.fixture
def offline(no_downloads):
    """Where torchvision would cache the AlexNet weights — empty, and nothing is downloaded."""
    return no_downloads / "hub" / "checkpoints" / FILE_NAME


# --- shapes and preprocessing -------------------------------------------------------------

EXPECTED_224 = {"conv1": (64, 55, 55), "conv2": (192, 27, 27), "conv3": (384, 13, 13),
                "conv4": (256, 13, 13), "conv5": (256, 13, 13), "pool5": (256, 6, 6)}


def test_every_cut_has_the_expected_shape_and_the_head_follows_it():
    x = torch.rand(2, 3, 224, 224)
    for cut, shape in EXPECTED_224.items():
        model = AlexNetFeature(num_classes=5, cut=cut, head=[32], pretrained=False)
        assert model.feature_shape == shape, cut
        assert model.head[1].in_features == math.prod(shape), cut
        if cut in ("conv4", "pool5"):
            assert tuple(model.backbone(x).shape) == (2, *shape)
            assert tuple(model(x).shape) == (2, 5)


def test_preprocessing_comes_from_the_weights():
    t = AlexNet_Weights.IMAGENET1K_V1.transforms()
    prep = preprocess_for(preset("alexnet_feature"))
    assert (prep.size, prep.resize) == (t.crop_size[0], t.resize_size[0]) == (224, 256)
    assert prep.mean == tuple(t.mean) and prep.std == tuple(t.std)
    assert preprocess_for(preset("alexnet_finetune")) == prep
    assert preprocess_for(preset("alexnet_feature", pretrained=False)) == prep  # random init compares
    small = weights_preprocess(AlexNet_Weights.IMAGENET1K_V1, 112)
    assert (small.size, small.resize, small.mean) == (112, 128, prep.mean)


def test_bad_names_and_sizes_are_one_line_errors():
    with pytest.raises(UserError, match="unknown model.cut 'conv9' for alexnet — choose one of: conv1, conv2.*pool5"):
        AlexNetFeature(num_classes=3, cut="conv9", pretrained=False)
    with pytest.raises(UserError, match="unknown model.freeze 'conv6' for alexnet — choose one of: conv1.*fc6, fc7"):
        AlexNetFinetune(num_classes=3, freeze="conv6", pretrained=False)
    with pytest.raises(UserError, match="model.input_size=40 is too small for alexnet up to pool5 — use "
                                        "model.input_size >= 63"):
        AlexNetFeature(num_classes=3, cut="pool5", input_size=40, pretrained=False)
    with pytest.raises(UserError, match="backbone_lr_mult=0"):
        AlexNetFinetune(num_classes=3, backbone_lr_mult=0, pretrained=False)


# --- weights: file, torchvision cache, download, errors ---------------------------------------

def test_weights_path_round_trip(state_file, state):
    feature = AlexNetFeature(num_classes=3, cut="pool5", head=[8], weights_path=str(state_file), input_size=64)
    for key, value in feature.backbone.state_dict().items():
        assert torch.equal(value, state[key.removeprefix("body.")]), key
    finetune = AlexNetFinetune(num_classes=3, weights_path=str(state_file), input_size=64)
    own = finetune.state_dict()
    assert all(torch.equal(own[f"net.{k}"], state[k]) for k in state if not k.startswith("classifier.6"))
    assert own["net.classifier.6.weight"].shape == (3, 4096)  # the new layer for our classes


def test_weights_from_the_torchvision_cache(state_file, state, offline):
    offline.parent.mkdir(parents=True)
    offline.symlink_to(state_file)
    assert torchvision_cache_path(AlexNet_Weights.IMAGENET1K_V1) == offline
    model = AlexNetFeature(num_classes=3, cut="conv1", head=[8], input_size=64)
    assert torch.equal(model.backbone.body.get_submodule("features.0").weight, state["features.0.weight"])


RAN: list[str] = []  # what CodeOnLoad's unpickling ran


def record_and_rebuild(text: str) -> ValueError:
    RAN.append(text)
    return ValueError(text)


class CodeOnLoad(ValueError):
    """An exception whose unpickling calls a function (any code a weights file could run)."""

    def __reduce__(self):
        return (record_and_rebuild, (str(self),))


def assert_refused(path):
    with pytest.raises(UserError) as err:
        AlexNetFeature(num_classes=3, weights_path=str(path))
    message = str(err.value)
    assert "\n" not in message and f"'{path}'" in message
    assert "torch.save(" in message  # and says how to make a good file


def test_weight_file_errors(tmp_path, state):
    with pytest.raises(UserError, match=r"model.weights_path='.*nope.pth' does not exist"):
        AlexNetFeature(num_classes=3, weights_path=str(tmp_path / "nope.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="garbage.pth' is not a readable weights file"):
        AlexNetFeature(num_classes=3, weights_path=str(garbage))
    # A pickled exception instead of a tensor. Whether torch's weights_only loader refuses it
    # ("holds objects other than tensors") or reads it (then facecls says "does not hold a
    # state_dict") depends on the torch version; either way: one line naming the file.
    torch.save({"features.0.weight": ValueError("code")}, tmp_path / "objects.pth")
    assert_refused(tmp_path / "objects.pth")
    # One whose unpickling runs code: safe loading must refuse it before that code runs.
    torch.save({"features.0.weight": CodeOnLoad("code")}, tmp_path / "code.pth")
    assert_refused(tmp_path / "code.pth")
    assert RAN == []
    torch.load(tmp_path / "code.pth", weights_only=False)  # unsafe loading would have run it
    assert RAN == ["code"]
    RAN.clear()
    wrong = dict(state, **{"features.3.weight": torch.zeros(10, 64, 5, 5)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(UserError, match=r"features.3.weight has shape \(10, 64, 5, 5\) there but "
                                        r"\(192, 64, 5, 5\) here"):
        AlexNetFinetune(num_classes=3, weights_path=str(tmp_path / "wrong.pth"))
    with pytest.raises(UserError, match="model.pretrained=false"):
        AlexNetFeature(num_classes=3, pretrained=False, weights_path=str(tmp_path / "wrong.pth"))


def test_no_weights_anywhere_says_which_file_to_get_and_where(offline):
    with pytest.raises(UserError) as err:
        AlexNetFeature(num_classes=3)
    message = str(err.value)
    assert "\n" not in message
    assert f"https://download.pytorch.org/models/{FILE_NAME}" in message and str(offline) in message
    assert "model.weights_path=" in message and "model.pretrained=false" in message


def test_a_failed_download_is_the_same_one_line_error(offline, monkeypatch):
    monkeypatch.delenv("FACECLS_OFFLINE")

    def no_network(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(AlexNet_Weights, "get_state_dict", no_network)
    with pytest.raises(UserError, match=f"the download failed.*Name or service not known.*{FILE_NAME}"):
        AlexNetFinetune(num_classes=3)


# --- the feature cache and the hook train.py calls -------------------------------------------

def _bundle(n=12, size=64, seed=0):
    """A DataBundle of random uint8 images (train n, val 4, test 4), as build_data returns."""
    from facecls.data.dataset import DataBundle, Split

    g = torch.Generator().manual_seed(seed)

    def split(k):
        pixels = torch.randint(0, 256, (k, 3, size, size), dtype=torch.uint8, generator=g)
        return Split(pixels, torch.arange(k) % 3, [f"c/{seed}_{i}.jpg" for i in range(k)])

    prep = weights_preprocess(AlexNet_Weights.IMAGENET1K_V1, size)
    return DataBundle(split(n), split(4), split(4), ["a", "b", "c"], Path("."), prep)


def _eval_settings():
    from facecls.inference.evaluate import EvalSettings

    return EvalSettings(device=torch.device("cpu"), batch_size=8, progress=False)


def test_feature_cache_is_reused_and_keyed_by_weights_and_data(tmp_path, monkeypatch):
    from facecls.data import features
    from facecls.data.batches import BatchPreparer

    data, settings = _bundle(), _eval_settings()
    prepare = BatchPreparer(data.preprocess, settings.device)
    torch.manual_seed(0)
    model = AlexNetFeature(num_classes=3, cut="conv5", head=[8], pretrained=False, input_size=64)
    first = features.cached_features(model.backbone, data, prepare, settings, tmp_path, {"cut": "conv5"})
    with torch.no_grad():
        direct = model.backbone(prepare(data.test.inputs))
    assert first.train.inputs.shape == (12, 256, 3, 3) and first.train.inputs.dtype == torch.float32
    assert torch.allclose(first.test.inputs, direct, atol=1e-6)
    assert torch.equal(first.val.labels, data.val.labels) and first.classes == data.classes
    assert len(list((tmp_path / "features").glob("*.pt"))) == 1

    # Same key from disk: the backbone never runs (neither memory nor compute may be used).
    features._recent.clear()
    monkeypatch.setattr(features, "compute_features", lambda *a, **k: pytest.fail("backbone ran"))
    again = features.cached_features(model.backbone, data, prepare, settings, tmp_path, {"cut": "conv5"})
    assert torch.equal(again.train.inputs, first.train.inputs)
    monkeypatch.undo()

    # Other weights or other pixels: another key, another file.
    torch.manual_seed(1)
    other = AlexNetFeature(num_classes=3, cut="conv5", head=[8], pretrained=False, input_size=64)
    features.cached_features(other.backbone, data, prepare, settings, tmp_path, {"cut": "conv5"})
    features.cached_features(model.backbone, _bundle(seed=1), prepare, settings, tmp_path, {"cut": "conv5"})
    assert len(list((tmp_path / "features").glob("*.pt"))) == 3


def test_augmentation_turns_the_cache_off_and_says_why(caplog):
    from facecls.data.features import FeatureCache

    model = AlexNetFeature(num_classes=3, cut="conv1", head=[8], pretrained=False, input_size=64)
    data = _bundle()
    with caplog.at_level(logging.INFO, logger="facecls.models.feature_extractor"):
        view = model.training_view(data, None, FeatureCache(None, _eval_settings()), augmented=True)
    net, same = view.module, view.data
    assert net is model and same is data
    assert "Feature cache off: train-time augmentation" in caplog.text
    model.train()
    assert model.head.training and not model.backbone.training  # frozen part stays in eval mode
    assert not any(p.requires_grad for p in model.backbone.parameters())


# --- end-to-end CLI runs ----------------------------------------------------------------------

RUN_FILES = ["train.log", "history.csv", "metrics.json", "curves.png", "confusion_matrix.png",
             "checkpoints/best.pt", "checkpoints/last.pt", ".hydra/config.yaml"]


def _start(base, env, name, *overrides, data_root):
    """`facecls train … hydra.run.dir=base/name` started in the background; _finish waits for it.
    Runs are started side by side: two cores, and a finetune run mostly writes checkpoints."""
    run_dir = base / name
    args = [sys.executable, "-m", "facecls", "train", "data=imagefolder", f"data.root={data_root}", *TINY,
            *overrides, f"hydra.run.dir={run_dir}"]
    return run_dir, subprocess.Popen(args, cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)


def _finish(started):
    run_dir, job = started
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, f"training {run_dir.name} failed:\n{output[-3000:]}"
    assert all((run_dir / f).is_file() for f in RUN_FILES), sorted(run_dir.rglob("*"))
    return run_dir


FEATURE = ["model=alexnet_feature", *SMALL, "seed=5"]
# Plain SGD (no optimizer state) and last.pt only after the last epoch: with Adam's state each
# last.pt of the 57 M-parameter AlexNet was 680 MB, and the runs spent half their time writing them.
FINETUNE = ["model=alexnet_finetune", "model.input_size=64", "model.freeze=conv2", "model.backbone_lr_mult=0.1",
            "seed=5", "optim=sgd", "optim.lr=0.001", "optim.momentum=0", "trainer.checkpoint.every_n_epochs=2"]


@pytest.fixture(scope="module")
def preset_runs(tmp_path_factory, tiny_faces, state_file):
    """The presets' runs from the same weights and seed, side by side: two alexnet_feature runs
    (with and without the feature cache, one cache dir) and an alexnet_finetune run (its own)."""
    weights = f"model.weights_path={state_file}"
    feature, finetune = tmp_path_factory.mktemp("feature"), tmp_path_factory.mktemp("finetune")
    feature_env, finetune_env = cli_env(feature / "cache"), cli_env(finetune / "cache")
    started = {"cached": _start(feature, feature_env, "cached", *FEATURE, weights, data_root=tiny_faces),
               "uncached": _start(feature, feature_env, "uncached", *FEATURE, weights, "model.cache_features=false",
                                  data_root=tiny_faces),
               "finetune": _start(finetune, finetune_env, "finetune", *FINETUNE, weights, data_root=tiny_faces)}
    runs = {name: _finish(job) for name, job in started.items()}
    return (feature, feature_env, runs["cached"], runs["uncached"]), (finetune, finetune_env, runs["finetune"])


@pytest.fixture(scope="module")
def feature_runs(preset_runs):
    """(base, env, cached run dir, uncached run dir)."""
    return preset_runs[0]


def test_feature_run_keeps_the_backbone_bit_identical_and_eval_agrees(feature_runs, state, monkeypatch):
    from facecls.commands.eval import main as eval_main

    base, env, run_dir, _ = feature_runs
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["epochs_run"] == 2 and metrics["trainable_params"] == 256 * 3 * 3 * 32 + 32 + 32 * 3 + 3
    assert "Backbone features: 36 images" in (run_dir / "train.log").read_text()
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    backbone = {k.removeprefix("backbone.body."): v for k, v in saved.items() if k.startswith("backbone.")}
    assert len(backbone) == 8  # conv1..conv4 (the default cut): 4 weights and 4 biases
    for key, value in backbone.items():
        assert torch.equal(value, state[key]), key
    # The head trained on cached features; `facecls eval` feeds the whole model images (its main
    # in-process: test_checkpoints_from_before_the_presets_still_load runs eval through the CLI).
    monkeypatch.setenv("FACECLS_CACHE_DIR", env["FACECLS_CACHE_DIR"])
    eval_main(compose("eval", [f"ckpt={run_dir / 'checkpoints' / 'best.pt'}"]))
    scores = read_json(run_dir / "eval.json")
    assert scores["test_acc"] == metrics["test_acc"]
    assert scores["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-5)


def test_cached_and_uncached_training_give_the_same_losses(feature_runs):
    base, _, cached, uncached = feature_runs
    a, b = read_history(cached), read_history(uncached)
    for column in ("train_loss", "val_loss"):
        assert float(a[0][column]) == pytest.approx(float(b[0][column]), rel=1e-4), column
    assert a[0]["train_loss"] != a[1]["train_loss"]  # the head did learn between the epochs
    assert "Feature cache off (model.cache_features=false)" in (uncached / "train.log").read_text()
    assert len(list((base / "cache" / "features").glob("*.pt"))) == 1  # only the cached run wrote one


@pytest.fixture(scope="module")
def finetune_run(preset_runs):
    """(base, env, run dir)."""
    return preset_runs[1]


def test_finetune_run_freezes_exactly_up_to_the_named_block(finetune_run, state):
    from facecls.inference.evaluate import evaluate
    from facecls.inference.loading import load_run

    _, env, run_dir = finetune_run
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    frozen = {BLOCKS["conv1"], BLOCKS["conv2"]}
    for block, module in BLOCKS.items():
        for leaf in ("weight", "bias"):
            key = f"{module}.{leaf}"
            same = torch.equal(last["model"][f"net.{key}"], state[key])
            assert same == (module in frozen), f"{block} {key} changed={not same}"
    assert last["model"]["net.classifier.6.weight"].shape == (3, 4096)
    assert [g["lr"] for g in last["optimizer"]["param_groups"]] == pytest.approx([1e-3, 1e-4])
    # Rebuilt from best.pt (without looking for ImageNet weights), it scores the test split as training did.
    run = load_run(run_dir / "checkpoints" / "best.pt", "cpu", cache_dir=env["FACECLS_CACHE_DIR"])
    test = evaluate(run.model, run.data.test, run.prepare, run.eval_settings())
    metrics = read_json(run_dir / "metrics.json")
    assert test["acc"] == metrics["test_acc"] and test["loss"] == pytest.approx(metrics["test_loss"], rel=1e-5)


# --- the presets against the classes they replaced --------------------------------------------
# tests/reference_alexnet.py holds AlexNetFeature/AlexNetFinetune as they were before the presets;
# a run of each (model._target_=reference_alexnet.…) must give the preset's history.csv exactly.

REFERENCE = {"feature": "reference_alexnet.AlexNetFeature", "finetune": "reference_alexnet.AlexNetFinetune"}


def _reference_run(base, env, kind, *overrides, data_root):
    env = dict(env, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")]))
    return _start(base, env, f"reference-{kind}", *overrides, f"model._target_={REFERENCE[kind]}",
                  data_root=data_root)


def _without_time(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.fixture(scope="module")
def reference_runs(feature_runs, finetune_run, tiny_faces, state_file):
    base, env, _, _ = feature_runs
    weights = f"model.weights_path={state_file}"
    started = {"feature": _reference_run(base, env, "feature", *FEATURE, weights, data_root=tiny_faces),
               "finetune": _reference_run(base, env, "finetune", *FINETUNE, weights, data_root=tiny_faces)}
    return {kind: _finish(job) for kind, job in started.items()}


def test_presets_train_exactly_as_the_classes_they_replaced(feature_runs, finetune_run, reference_runs):
    preset_runs = {"feature": feature_runs[2], "finetune": finetune_run[2]}
    for kind, run_dir in preset_runs.items():
        ours, theirs = read_history(run_dir), read_history(reference_runs[kind])
        assert len(ours) == 2 and ours[0]["train_loss"] != ours[1]["train_loss"], kind  # it did train
        assert _without_time(ours) == _without_time(theirs), kind  # every loss, accuracy and lr, as text
        a, b = read_json(run_dir / "metrics.json"), read_json(reference_runs[kind] / "metrics.json")
        assert (a["test_acc"], a["test_loss"]) == (b["test_acc"], b["test_loss"]), kind


def _as_before_the_presets(ckpt_path: Path, target: str) -> None:
    """Rewrite a reference run's checkpoint into what such a run wrote before the presets: the old
    class's name, and a model config without the presets' name/weights/pool."""
    data = torch.load(ckpt_path, weights_only=True)
    model_cfg = {k: v for k, v in data["config"]["model"].items() if k not in ("name", "weights", "pool")}
    data["config"]["model"] = dict(model_cfg, _target_=target)
    torch.save(data, ckpt_path)


def test_checkpoints_from_before_the_presets_still_load(reference_runs, feature_runs, finetune_run, caplog):
    from facecls.inference.checkpoint import load_checkpoint
    from facecls.inference.evaluate import evaluate
    from facecls.inference.loading import load_run

    base, env, _, _ = feature_runs
    old_classes = {kind: f"facecls.models.alexnet.{REFERENCE[kind].rsplit('.', 1)[1]}" for kind in REFERENCE}
    for kind, old_class in old_classes.items():
        for name in ("best.pt", "last.pt"):
            _as_before_the_presets(reference_runs[kind] / "checkpoints" / name, old_class)
    # eval reads each old best.pt (no reference module on the path now): both started side by side
    evals = {kind: subprocess.Popen([sys.executable, "-m", "facecls", "eval",
                                     f"ckpt={reference_runs[kind] / 'checkpoints' / 'best.pt'}"],
                                    cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for kind in REFERENCE}
    for kind, preset_run in (("feature", feature_runs[2]), ("finetune", finetune_run[2])):
        run_dir, old_class = reference_runs[kind], old_classes[kind]
        # the old best.pt scores as training did
        output, _ = evals[kind].communicate(timeout=600)
        assert evals[kind].returncode == 0, output[-3000:]
        assert read_json(run_dir / "eval.json")["test_acc"] == read_json(run_dir / "metrics.json")["test_acc"]
        # the old last.pt reads as the preset's: same keys, optimizer groups of the same sizes
        with caplog.at_level(logging.INFO, logger="facecls.models.legacy"):
            old = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        assert f"written by {old_class}" in caplog.text
        new = load_checkpoint(preset_run / "checkpoints" / "last.pt")
        assert old.config["model"] == new.config["model"]
        assert list(old.model) == list(new.model)
        assert [len(g["params"]) for g in old.optimizer["param_groups"]] == \
            [len(g["params"]) for g in new.optimizer["param_groups"]]
    run = load_run(reference_runs["feature"] / "checkpoints" / "best.pt", "cpu", cache_dir=env["FACECLS_CACHE_DIR"])
    test = evaluate(run.model, run.data.test, run.prepare, run.eval_settings())
    assert test["acc"] == read_json(reference_runs["feature"] / "metrics.json")["test_acc"]


def test_cli_without_weights_stops_with_one_line(tmp_path, tiny_faces, cache_env):
    env = dict(cache_env, TORCH_HOME=str(tmp_path / "empty-torch-home"), FACECLS_OFFLINE="1")
    proc = run_cli("train", "data=imagefolder", f"data.root={tiny_faces}", "model=alexnet_feature",
                   *TINY, *SMALL, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("facecls: error: pretrained weights are not available")
    assert FILE_NAME in errors[0] and os.path.join("empty-torch-home", "hub", "checkpoints") in errors[0]
    assert not (tmp_path / "run" / "checkpoints").exists()  # never trains from random weights

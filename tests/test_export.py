"""`facecls export` and predictions from an exported model: tiny runs trained in-process, exported
to ONNX and TorchScript, reopened through the runners that predict and serve use, and compared
with the checkpoint's PyTorch model on the val split (parity) and on `facecls predict`'s files.

No network: backbones use random weights (model.weights=null)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from helpers import compose_tiny_train, read_csv

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
pytestmark = pytest.mark.usefixtures("no_downloads")

MODELS = {
    "convnet": ["model=convnet", "model.input_size=16"],
    "mlp": ["model=mlp", "model.hidden=[12]", "model.input_size=16"],
    "finetune_resnet18": ["model=finetune", "model.name=resnet18", "model.weights=null", "model.input_size=32"],
    "feature_resnet18": ["model=feature_extractor", "model.name=resnet18", "model.weights=null",
                         "model.cut=layer2", "model.input_size=32"],
}


@pytest.fixture(scope="module")
def trained(tiny_faces, tmp_path_factory):
    """trained(name) → best.pt of a one-epoch run of MODELS[name] (each trained once per module)."""
    from facecls.training.run import run_training

    base = tmp_path_factory.mktemp("export-runs")
    done = {}

    def train(name: str):
        if name not in done:
            cfg = compose_tiny_train(tiny_faces, base / "cache", *MODELS[name], "trainer.max_epochs=1")
            run_training(cfg, base / name)
            done[name] = (base / name / "checkpoints" / "best.pt", str(base / "cache"))
        return done[name]

    return train


def export(ckpt, cache_dir, fmt: str, out=None, *more: str) -> dict:
    from facecls.config.compose import compose
    from facecls.export.run import run_export

    overrides = [f"ckpt={ckpt}", f"format={fmt}", f"cache_dir={cache_dir}", *more]
    return run_export(compose("export", overrides + ([f"out={out}"] if out else [])))


@pytest.mark.parametrize("name, fmt", [("convnet", "onnx"), ("convnet", "torchscript"), ("mlp", "onnx"),
                                       ("finetune_resnet18", "onnx"),
                                       pytest.param("finetune_resnet18", "torchscript", marks=pytest.mark.slow),
                                       ("feature_resnet18", "onnx")])
def test_export_matches_the_checkpoint_on_the_val_split(name, fmt, trained):
    from facecls.inference.checkpoint import load_checkpoint
    from facecls.inference.runners import open_runner

    ckpt, cache_dir = trained(name)
    summary = export(ckpt, cache_dir, fmt)
    parity = summary["parity"]
    assert parity["inputs"] == "val-split" and parity["images"] > 0
    assert parity["max_abs_diff"] <= 1e-3 and parity["argmax_agreement"] == 1.0 and parity["ok"]
    path = ckpt.parent.parent / "export" / ("model.onnx" if fmt == "onnx" else "model.torchscript.pt")
    assert summary["file"] == str(path) and path.is_file()
    assert json.loads(path.with_name(path.name + ".export.json").read_text())["parity"] == parity

    runner = open_runner(path)  # the file alone describes the model
    assert runner.kind == {"onnx": "onnxruntime", "torchscript": "torchscript"}[fmt]
    info = runner.info
    checkpoint = load_checkpoint(ckpt)
    assert info.classes == checkpoint.classes and info.output == "logits"
    assert info.preprocess["mean"] == list(checkpoint.preprocessing().mean)
    assert len(info.extra["checkpoint_sha256"]) == 64 and "test_acc" in info.extra["metrics"]
    # any batch size: the batch axis is dynamic; uint8 in, one row of logits per image out
    images = torch.randint(0, 256, (5, 3, info.input_size, info.input_size), dtype=torch.uint8)
    reference = open_runner(ckpt)
    assert torch.allclose(runner(images), reference(images), atol=1e-4)


def test_a_parity_failure_is_one_line_with_the_numbers_and_keeps_no_file(trained, tmp_path):
    """Two different models never agree: the check sees it (the same code refuses a broken export)."""
    from facecls.errors import UserError
    from facecls.export.parity import check_parity
    from facecls.inference.runners import open_runner

    convnet, _ = trained("convnet")
    other = open_runner(trained("mlp")[0])
    images = torch.randint(0, 256, (9, 3, 16, 16), dtype=torch.uint8)
    parity = check_parity(open_runner(convnet), other, images, "random", 1e-3)
    assert not parity.ok and parity.max_abs_diff > 1e-3 and "max |Δ|" in parity.line()

    with pytest.raises(UserError, match="format=bmp is unknown"):
        export(convnet, tmp_path, "bmp")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_predict_from_an_exported_model_equals_predict_from_the_checkpoint(fmt, trained, tiny_faces, tmp_path):
    from facecls.config.compose import compose
    from facecls.inspect.predict import run_predict

    ckpt, cache_dir = trained("convnet")
    model = tmp_path / f"model.{fmt}"
    export(ckpt, cache_dir, fmt, model)

    def predict(source: str, out) -> tuple[dict, list[dict]]:
        summary = run_predict(compose("predict", [source, f"input={tiny_faces}", f"out={out}", "progress=false",
                                                  "trainer.device=cpu", "count=4"]))
        return summary, read_csv(out / "predictions.csv")

    base, base_rows = predict(f"ckpt={ckpt}", tmp_path / "from-ckpt")
    got, rows = predict(f"model_file={model}", tmp_path / "from-export")
    assert got["images"] == base["images"] == 36 and got["accuracy"] == base["accuracy"] is not None
    assert [r["predicted"] for r in rows] == [r["predicted"] for r in base_rows]
    assert [r["file"] for r in rows] == [r["file"] for r in base_rows]
    assert max(abs(float(a["confidence"]) - float(b["confidence"])) for a, b in zip(rows, base_rows)) < 1e-5
    assert (tmp_path / "from-export" / "contact_sheet.png").stat().st_size > 0
    assert json.loads((tmp_path / "from-export" / "predict.json").read_text())["engine"] != "pytorch"


@pytest.mark.slow  # two CLI processes (~60 s on two busy cores); test_serve covers `model=FILE` on the CLI too
def test_cli_export_then_predict_model_file(trained, tiny_faces, tmp_path):
    """As a user types it: `model=FILE` names a file for predict (not the `model` config group)."""
    from helpers import cli_env, run_cli

    ckpt, cache_dir = trained("convnet")
    env = cli_env(cache_dir)
    out = run_cli("export", f"ckpt={ckpt}", "format=torchscript", f"out={tmp_path}/", cwd=tmp_path, env=env).stdout
    assert "max |Δ logit|" in out and (tmp_path / "model.torchscript.pt").is_file()
    photo = sorted(next(p for p in sorted(tiny_faces.iterdir()) if p.is_dir()).iterdir())[0]
    out = run_cli("predict", f"model={tmp_path / 'model.torchscript.pt'}", f"input={photo}",
                  f"out={tmp_path / 'p'}", cwd=tmp_path, env=env).stdout
    assert "1 image(s) classified" in out and len(read_csv(tmp_path / "p" / "predictions.csv")) == 1


def test_predict_needs_exactly_one_model(tmp_path, tiny_faces):
    from facecls.config.compose import compose
    from facecls.errors import UserError
    from facecls.inspect.predict import run_predict

    with pytest.raises(UserError, match="give the model to predict with once"):
        run_predict(compose("predict", [f"input={tiny_faces}", f"out={tmp_path}"]))


def test_the_onnx_path_imports_no_training_code(trained, tmp_path):
    """Scoring with an ONNX file (runners + predict) never loads facecls.training."""
    ckpt, cache_dir = trained("convnet")
    model = export(ckpt, cache_dir, "onnx", tmp_path / "m.onnx")["file"]
    code = ("import sys, torch\n"
            "from facecls.inference.runners import open_runner\nimport facecls.inspect.predict\n"
            f"runner = open_runner({model!r})\n"
            "print(runner(torch.zeros(2, 3, 16, 16, dtype=torch.uint8)).shape[0])\n"
            "print(sorted(m for m in sys.modules if m.startswith('facecls.training')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:2] == ["2", "[]"]

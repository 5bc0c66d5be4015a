"""Test-time augmentation (eval.tta=[flip], [flip,five_crop]) and most_confused.csv: the views
and their average on a hand-made model, then eval / predict / robustness on a trained checkpoint."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from facecls.errors import UserError
from facecls.inference.confusion import most_confused
from facecls.inference.tta import TTAModel, describe, tta_names, views

from helpers import read_csv, read_json, train_runs


class LeftBright(nn.Module):
    """Logits from the brightness of the left and right halves: not flip-invariant."""

    def forward(self, x):
        w = x.shape[-1] // 2
        return torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], 1) * 4


def test_views_and_their_average():
    x = torch.rand(3, 3, 8, 8)
    flip = views(x, ["flip"])
    assert len(flip) == 2 and torch.equal(flip[1], x.flip(-1))
    assert len(views(x, ["flip", "five_crop"])) == 10
    assert describe(["flip", "five_crop"]) == "flip × five_crop (10 views)"
    crops = views(torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8), ["five_crop"])
    assert len(crops) == 5 and all(c.dtype == torch.uint8 and c.shape == (2, 3, 16, 16) for c in crops)
    net = LeftBright()
    expected = (net(x).softmax(1) + net(x.flip(-1)).softmax(1)) / 2
    got = TTAModel(net, ["flip"])(x)
    assert torch.allclose(got.exp(), expected, atol=1e-6)
    assert not torch.allclose(net(x).softmax(1), expected)  # the average is not the plain prediction
    assert tta_names(None) == tta_names([]) == tta_names("none") == []
    with pytest.raises(UserError, match="unknown test-time augmentation 'rotate'"):
        tta_names(["flip", "rotate"])


def test_most_confused_ranks_pairs_by_count():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    preds = torch.tensor([1, 1, 0, 0, 1, 1, 0, 2])
    rows = most_confused(labels, preds, ["a", "b", "c"])
    assert rows[0] == ("a", "b", 2, 2 / 3)
    assert [(t, p, n) for t, p, n, _ in rows[1:]] == [("b", "a", 1), ("c", "a", 1), ("c", "b", 1)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_faces):
    base = tmp_path_factory.mktemp("tta")
    ckpts, env = train_runs(base, tiny_faces, ["convnet"])
    return base, ckpts["convnet"], env


def test_eval_predict_robustness_with_tta(trained, tiny_faces, monkeypatch):
    from facecls.commands.eval import main as eval_main
    from facecls.commands.robustness import main as robustness_main
    from facecls.config.compose import compose
    from facecls.inspect.predict import run_predict

    base, ckpt, env = trained
    monkeypatch.setenv("FACECLS_CACHE_DIR", env["FACECLS_CACHE_DIR"])
    run_dir = ckpt.parent.parent
    assert (run_dir / "most_confused.csv").read_text().startswith("true,predicted,count,share_of_true\n")

    scores = eval_main(compose("eval", [f"ckpt={ckpt}", f"out={base / 'eval'}", "eval.tta=[flip,five_crop]"]))
    assert read_json(base / "eval" / "eval.json")["tta"] == scores["tta"]
    tta = scores["tta"]
    assert tta["views"] == "flip × five_crop (10 views)"
    assert tta["test_acc_gain"] == pytest.approx(tta["test_acc"] - scores["test_acc"])
    assert 0 <= tta["test_acc"] <= 1 and tta["test_loss"] != scores["test_loss"]
    assert (base / "eval" / "eval_most_confused.csv").is_file()
    assert "tta" not in eval_main(compose("eval", [f"ckpt={ckpt}", f"out={base / 'eval'}"]))

    summary = run_predict(compose("predict", [f"ckpt={ckpt}", f"input={tiny_faces}", f"out={base / 'pred'}",
                                              "eval.tta=[flip]", "progress=false"]))
    assert read_json(base / "pred" / "predict.json")["tta"] == "flip (2 views)" and summary["images"] == 36
    rows = robustness_main(compose("robustness", [f"ckpt={ckpt}", f"out={base / 'rob'}", "variation=[rotation]",
                                                  "variation.rotation.degrees=[10]", "splits=[test]",
                                                  "eval.tta=[flip]"]))
    flip = eval_main(compose("eval", [f"ckpt={ckpt}", f"out={base / 'eval2'}", "eval.tta=[flip]"]))["tta"]
    assert rows[0]["variation"] == "clean" and rows[0]["loss"] == pytest.approx(flip["test_loss"], rel=1e-5)


def test_visualize_top_losses(trained, monkeypatch):
    from facecls.commands.visualize import main as visualize_main
    from facecls.config.compose import compose

    base, ckpt, env = trained
    monkeypatch.setenv("FACECLS_CACHE_DIR", env["FACECLS_CACHE_DIR"])
    out = base / "vis"
    result = visualize_main(compose("visualize", ["kind=predictions", "order=loss", "count=2", f"ckpt={ckpt}",
                                                  f"out={out}"]))
    rows = read_csv(out / "top_losses.csv")
    assert (out / "top_losses.png").is_file() and len(rows) == 4 == len(result["top_losses"])
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    for r in rows:  # the loss is the cross-entropy of the true class
        assert float(r["loss"]) == pytest.approx(-math.log(float(r["true_probability"])), rel=1e-4)
        assert (r["true"] == r["predicted"]) == (float(r["true_probability"]) == pytest.approx(float(r["probability"])))

"""Per-class, summary and calibration metrics (facecls.training.metrics) against hand
computations, and the files a training run and `facecls eval` write from them."""
from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from facecls.inference.metrics import (
    calibration,
    confusion_matrix,
    fit_temperature,
    negative_log_likelihood,
    per_class,
    summary_metrics,
    top_k_accuracy,
    with_temperature,
)

from helpers import TINY, read_csv, read_json, run_cli


def one_hot_probabilities(predictions: list[int], num_classes: int, confidence: float = 0.9) -> torch.Tensor:
    """Each row puts ``confidence`` on its prediction and shares the rest evenly."""
    rest = (1 - confidence) / (num_classes - 1)
    p = torch.full((len(predictions), num_classes), rest, dtype=torch.float64)
    p[torch.arange(len(predictions)), torch.tensor(predictions)] = confidence
    return p


def test_per_class_matches_a_hand_computation():
    # true \ predicted:   a  b  c
    matrix = torch.tensor([[3, 1, 0],    # a: 4 images
                           [2, 2, 0],    # b: 4 images
                           [0, 0, 0]])   # c: none, and never predicted
    stats = per_class(matrix)
    assert stats.precision.tolist() == pytest.approx([3 / 5, 2 / 3, 0.0])
    assert stats.recall.tolist() == pytest.approx([3 / 4, 2 / 4, 0.0])
    f1_a, f1_b = 2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4), 2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2)
    assert stats.f1.tolist() == pytest.approx([f1_a, f1_b, 0.0])
    assert stats.support.tolist() == [4, 4, 0]


def test_confusion_matrix_and_summary_metrics_on_an_imbalanced_split():
    # 8 images of class 0 (all right), 2 of class 1 (both predicted 0): accuracy 0.8 but a
    # balanced accuracy of (1 + 0) / 2 — the number that shows the minority class is lost.
    labels = torch.tensor([0] * 8 + [1] * 2)
    probabilities = one_hot_probabilities([0] * 10, 2)
    assert confusion_matrix(labels, probabilities.argmax(1), 2).tolist() == [[8, 0], [2, 0]]
    m = summary_metrics(probabilities, labels, 2)
    assert m["acc"] == pytest.approx(0.8)
    assert m["balanced_acc"] == pytest.approx(0.5) and m["balanced_acc"] != m["acc"]
    f1_0 = 2 * 0.8 * 1.0 / 1.8
    assert m["macro_f1"] == pytest.approx(f1_0 / 2)
    assert m["weighted_f1"] == pytest.approx(0.8 * f1_0)
    assert m["top5_acc"] is None  # 2 classes: top-5 says nothing
    assert m["nll"] == pytest.approx(-(8 * math.log(0.9) + 2 * math.log(0.1)) / 10)


def test_top_k_accuracy():
    probabilities = torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
    labels = torch.tensor([0, 1, 2])
    assert top_k_accuracy(probabilities, labels, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(probabilities, labels, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(probabilities, labels, 5) == 1.0  # k above the class count: every class
    many = summary_metrics(torch.eye(7)[[1, 2, 3]], torch.tensor([1, 2, 4]), 7)
    assert many["top5_acc"] == pytest.approx(1.0)  # 7 classes: top-5 is reported


def test_ece_is_zero_when_calibrated_and_large_when_overconfident():
    generator = torch.Generator().manual_seed(0)
    n = 20_000
    confidence = torch.rand(n, generator=generator, dtype=torch.float64)
    # Right with probability equal to the confidence: calibrated up to sampling noise.
    calibrated = torch.rand(n, generator=generator, dtype=torch.float64) < confidence
    assert calibration(confidence, calibrated).ece < 0.02
    # Always 99% sure, right half of the time: ECE ≈ 0.49.
    overconfident = calibration(torch.full((n,), 0.99, dtype=torch.float64), torch.arange(n) % 2 == 0)
    assert overconfident.ece == pytest.approx(0.49)
    assert overconfident.counts.tolist() == [0] * 14 + [n]  # 0.99 lands in the last of 15 bins


def test_calibration_bins_by_hand():
    bins = calibration(torch.tensor([0.1, 0.2, 0.9, 1.0]), torch.tensor([True, False, True, False]), n_bins=2)
    assert bins.counts.tolist() == [2, 2]
    assert bins.confidence.tolist() == pytest.approx([0.15, 0.95])
    assert bins.accuracy.tolist() == pytest.approx([0.5, 0.5])
    assert bins.ece == pytest.approx((abs(0.5 - 0.15) * 2 + abs(0.5 - 0.95) * 2) / 4)


def test_temperature_scaling_undoes_overconfidence():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5000, 4, generator=generator, dtype=torch.float64) * 2
    labels = torch.multinomial(logits.softmax(1), 1, generator=generator).squeeze(1)  # calibrated by design
    overconfident = (logits * 3).softmax(1)  # the same ranking, three times too sure
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    rescaled = with_temperature(overconfident, temperature)
    assert torch.equal(rescaled.argmax(1), overconfident.argmax(1))  # accuracy is untouched
    before, after = summary_metrics(overconfident, labels, 4), summary_metrics(rescaled, labels, 4)
    assert after["ece"] < 0.03 < before["ece"] and after["nll"] < before["nll"]


def test_nll_stays_finite_for_a_certain_mistake():
    assert math.isfinite(negative_log_likelihood(torch.tensor([[1.0, 0.0]]), torch.tensor([1])))


def test_train_and_eval_write_per_class_metrics_and_calibration(tmp_path, cache_env, monkeypatch):
    """A tiny imbalanced dataset with Unicode class names: per_class.csv, metrics.json,
    reliability.png/.csv from training, and the same numbers again from `facecls eval`."""
    from facecls.data.synthetic import write_dataset

    root = tmp_path / "faces"
    write_dataset(root, num_classes=3, images_per_class=12, image_size=32, seed=1, progress=False)
    names = ["Zoë Ångström", "李小龙", "José"]
    for old, new in zip(sorted(p.name for p in root.iterdir()), names):
        (root / old).rename(root / new)
    for extra in sorted((root / "José").iterdir())[:6]:  # imbalance: José loses half its images
        extra.unlink()
    run_dir = tmp_path / "run"
    run_cli("train", "data=imagefolder", f"data.root={root}", *TINY, f"hydra.run.dir={run_dir}",
            cwd=tmp_path, env=cache_env)

    metrics = read_json(run_dir / "metrics.json")
    assert metrics["classes"] == sorted(names)
    rows = read_csv(run_dir / "per_class.csv")
    assert [r["class"] for r in rows] == sorted(names)  # Unicode names round-trip
    assert sum(int(r["support"]) for r in rows) == metrics["test_size"]
    recalls = [float(r["recall"]) for r in rows if int(r["support"])]
    assert metrics["test_balanced_acc"] == pytest.approx(sum(recalls) / len(recalls), abs=1e-6)
    for key in ("test_macro_f1", "test_weighted_f1", "test_ece", "test_nll"):
        assert isinstance(metrics[key], float), key
    assert metrics["test_top5_acc"] is None and 0 <= metrics["test_ece"] <= 1
    bins = read_csv(run_dir / "reliability.csv")
    assert len(bins) == 15 and sum(int(b["count"]) for b in bins) == metrics["test_size"]
    with Image.open(run_dir / "reliability.png") as image:
        image.verify()
        assert image.format == "PNG"

    from facecls.commands.eval import main as eval_main
    from facecls.config.compose import compose

    # `facecls eval`'s main in-process (one Python start less; test_cli_train runs eval through the CLI)
    monkeypatch.setenv("FACECLS_CACHE_DIR", cache_env["FACECLS_CACHE_DIR"])
    eval_main(compose("eval", [f"ckpt={run_dir / 'checkpoints' / 'best.pt'}", "calibrate=true"]))
    scores = read_json(run_dir / "eval.json")
    assert scores["calibration"]["temperature"] > 0 and scores["calibration"]["fitted_on"] == "val"
    assert scores["calibration"]["test_ece_before"] == pytest.approx(metrics["test_ece"], abs=1e-6)
    for key in ("macro_f1", "weighted_f1", "balanced_acc", "ece", "nll"):
        assert scores[f"test_{key}"] == pytest.approx(metrics[f"test_{key}"], abs=1e-6), key
        assert f"val_{key}" in scores
    assert read_csv(run_dir / "eval_per_class.csv") == rows
    assert (run_dir / "eval_reliability.png").is_file()

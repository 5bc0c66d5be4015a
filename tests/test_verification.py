"""The verification protocol on hand-made score sets with answers worked out by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from facecls.errors import UserError
from facecls.faces.figures import roc_figure, roc_overlay, similarity_histogram
from facecls.faces.verification import (
    accuracy_at,
    best_threshold,
    eer,
    kfold_accuracy,
    roc,
    tar_at_far,
    threshold_at_far,
    verification_report,
)

# Four different-person pairs and four same-person pairs; one of each on the wrong side.
DIFF, SAME = [0.1, 0.2, 0.3, 0.6], [0.4, 0.7, 0.8, 0.9]
SCORES, LABELS = np.array(DIFF + SAME), np.array([False] * 4 + [True] * 4)


def test_best_threshold_is_the_lowest_accuracy_maximising_midpoint():
    # Midpoints 0.35, 0.5 and 0.65 all decide 7 of 8 pairs right; the lowest is returned.
    assert best_threshold(SCORES, LABELS) == pytest.approx(0.35)
    assert accuracy_at(SCORES, LABELS, 0.35) == 7 / 8
    # Perfectly separated: the only midpoint between the two piles.
    assert best_threshold([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(0.5)
    # Only one kind of pair: everything goes to that side.
    assert accuracy_at([0.3, 0.5], [1, 1], best_threshold([0.3, 0.5], [1, 1])) == 1.0


def test_protocol_never_tunes_on_the_scored_fold():
    """Each fold's own best threshold separates it perfectly, but the two folds need different
    thresholds. The protocol scores each fold with the other's threshold: 50% on both. A threshold
    tuned on the scored fold would give 100%, and one tuned on all pairs 75%: both fail here."""
    scores = [0.45, 0.5, 0.6, 0.7,    # fold 0: different, different, same, same -> cut in (0.5, 0.6)
              0.2, 0.3, 0.35, 0.4]    # fold 1: different, different, same, same -> cut in (0.3, 0.35)
    same = [0, 0, 1, 1, 0, 0, 1, 1]
    folds = [0, 0, 0, 0, 1, 1, 1, 1]
    result = kfold_accuracy(scores, same, folds)
    assert result.accuracies == [0.5, 0.5]
    assert result.thresholds == pytest.approx([0.325, 0.55])  # fold 0 got fold 1's cut and vice versa
    assert result.mean == 0.5
    # The cheats the protocol forbids read higher on the same data.
    own = [accuracy_at(scores[i:i + 4], same[i:i + 4], best_threshold(scores[i:i + 4], same[i:i + 4]))
           for i in (0, 4)]
    assert own == [1.0, 1.0]
    assert accuracy_at(scores, same, best_threshold(scores, same)) == 0.75


def test_a_folds_threshold_ignores_that_folds_scores():
    rng = np.random.default_rng(0)
    scores, same = rng.uniform(-1, 1, 300), rng.random(300) < 0.5
    folds = np.repeat(np.arange(3), 100)
    before = kfold_accuracy(scores, same, folds).thresholds
    moved = scores.copy()
    moved[folds == 1] = rng.uniform(-1, 1, 100)  # rewrite fold 1 entirely
    after = kfold_accuracy(moved, same, folds).thresholds
    assert after[1] == before[1]
    assert after[0] != before[0] or after[2] != before[2]  # the others did see fold 1


def test_fold_statistics_use_the_sample_std_and_its_standard_error():
    scores = [0.1, 0.2, 0.6, 0.7,     # fold 0, scored at fold 1's cut 0.325: all right
              0.2, 0.3, 0.35, 0.4]    # fold 1, scored at fold 0's cut 0.4: both same pairs rejected
    result = kfold_accuracy(scores, [0, 0, 1, 1] * 2, [0] * 4 + [1] * 4)
    assert result.accuracies == [1.0, 0.5]
    assert result.thresholds == pytest.approx([0.325, 0.4])
    assert result.mean == 0.75
    assert result.std == pytest.approx(math.sqrt(2 * 0.25 ** 2 / 1))  # divided by k-1
    assert result.stderr == pytest.approx(result.std / math.sqrt(2))


def test_one_fold_is_refused():
    with pytest.raises(UserError, match="at least 2"):
        kfold_accuracy(SCORES, LABELS, np.zeros(8, dtype=int))


def test_roc_auc_known_values():
    assert roc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]).auc == 1.0
    assert roc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]).auc == 0.0
    assert roc([0.5] * 6, [0, 1] * 3).auc == 0.5  # all tied: the diagonal
    curve = roc(SCORES, LABELS)
    assert curve.auc == pytest.approx(15 / 16)  # P(same > different): 15 of the 16 cross pairs
    assert (curve.far[0], curve.tar[0], curve.far[-1], curve.tar[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(curve.far) >= 0) and np.all(np.diff(curve.tar) >= 0)


def test_eer_on_symmetric_cases():
    # One different pair above one same pair: at the cut 0.5, FAR = FRR = 1/4.
    assert eer(SCORES, LABELS) == pytest.approx(0.25)
    assert eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0
    assert eer([0.5] * 6, [0, 1] * 3) == pytest.approx(0.5)  # chance: crossing midway along the diagonal


def test_tar_at_far_leaves_out_fars_the_pairs_cannot_support():
    diff = np.arange(20) * 0.05          # 20 different pairs: 1e-1 needs 10, 1e-2 needs 100
    same = np.array([0.5, 0.86, 0.9, 0.99])
    scores, labels = np.r_[diff, same], np.r_[np.zeros(20, bool), np.ones(4, bool)]
    result = tar_at_far(scores, labels)
    assert list(result.results) == ["1e-01"]
    entry = result.results["1e-01"]
    assert entry["threshold"] == pytest.approx(0.85)  # third-highest different score: 2 of 20 above it
    assert entry["far_achieved"] == pytest.approx(0.1)
    assert entry["tar"] == pytest.approx(0.75)
    assert [x["far"] for x in result.left_out] == [1e-2, 1e-3]
    assert "at least 100 different-person pairs, there are 20" in result.left_out[0]["reason"]
    assert threshold_at_far(scores, labels, 0.1) == pytest.approx(0.85)
    with pytest.raises(UserError, match="needs at least 100"):
        threshold_at_far(scores, labels, 0.01)
    with pytest.raises(UserError, match="not a rate"):
        threshold_at_far(scores, labels, 2.0)


def test_report_is_json_and_accepts_torch_tensors():
    rng = np.random.default_rng(1)
    same = np.repeat([True, False], 1000)
    scores = np.where(same, rng.normal(0.6, 0.15, 2000), rng.normal(0.1, 0.15, 2000))
    folds = np.tile(np.repeat(np.arange(10), 100), 2)
    report = verification_report(torch.tensor(scores, requires_grad=True), torch.tensor(same), torch.tensor(folds),
                                 far=1e-2)
    assert json.loads(json.dumps(report)) == report
    assert {"accuracy_mean", "accuracy_std", "accuracy_stderr", "fold_accuracies", "fold_thresholds", "roc_auc",
            "eer", "tar_at_far", "far_left_out", "threshold", "n_pairs", "n_same", "n_different"} <= set(report)
    assert (report["n_pairs"], report["n_same"], report["n_different"], report["n_folds"]) == (2000, 1000, 1000, 10)
    assert report["accuracy_mean"] == pytest.approx(np.mean(report["fold_accuracies"]))
    assert report["accuracy_stderr"] == pytest.approx(report["accuracy_std"] / math.sqrt(10))
    assert list(report["tar_at_far"]) == ["1e-01", "1e-02", "1e-03"] and report["far_left_out"] == []
    assert report["threshold"] == pytest.approx(report["tar_at_far"]["1e-02"]["threshold"])
    assert 0.9 < report["accuracy_mean"] < 1 and 0.9 < report["roc_auc"] <= 1 and 0 < report["eer"] < 0.1


@pytest.mark.parametrize("scores, same, match", [
    ([0.1, 0.2], [1, 1], "no different-person pairs"),
    ([0.1, float("nan")], [0, 1], "NaN or infinite"),
    ([], [], "no pairs"),
])
def test_bad_score_sets_are_user_errors(scores, same, match):
    with pytest.raises(UserError, match=match):
        verification_report(scores, same, [0, 1][:len(scores)])


def test_figures_are_written_atomically(tmp_path):
    curve = roc(SCORES, LABELS)
    for path in (roc_figure(curve.far, curve.tar, tmp_path / "roc.png"),
                 roc_overlay({"a": (curve.far, curve.tar), "b": ([0, 0.5, 1], [0, 0.9, 1])}, tmp_path / "two.png"),
                 similarity_histogram(SCORES, LABELS, 0.35, tmp_path / "similarities.png")):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc.png", "similarities.png", "two.png"]

"""Honest comparisons in `facecls summarize`: n and 95% t-intervals per configuration, and
paired comparisons (runs sharing seed and fold) with a CI, a p-value and "within noise" —
on run dirs with known numbers, against values worked out by hand."""
from __future__ import annotations

import json
import math

import pytest
import yaml

from facecls.errors import UserError
from facecls.sweeps.stats import metric_bounds, paired, t_interval, t_quantile, t_two_sided_p
from facecls.sweeps.summary import write_summary

from helpers import read_csv

# test accuracy per seed 0, 1, 2
RESULTS = {"a": [0.80, 0.82, 0.84], "b": [0.90, 0.85, 0.83], "c": [0.60, 0.61, 0.63]}
T_975_2 = 4.302652729749464  # t_{0.975} with 2 degrees of freedom (any t table)


def make_runs(root, results: dict[str, list[float]], seeds=(0, 1, 2)):
    for name, accs in results.items():
        for seed, acc in zip(seeds, accs):
            run = root / f"{name}_{seed}"
            (run / ".hydra").mkdir(parents=True)
            (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"reg={name}", f"seed={seed}"]))
            (run / "metrics.json").write_text(json.dumps({
                "best_epoch": 1, "best_val_acc": acc - 0.05, "test_acc": acc, "test_macro_f1": acc - 0.1,
                "epochs_run": 1, "stop_reason": "max_epochs", "wall_seconds": 1.0}))
    return root


def hand_paired(reference: list[float], other: list[float]) -> tuple[float, float, float]:
    diffs = [o - r for r, o in zip(reference, other)]
    n, mean = len(diffs), sum(diffs) / len(diffs)
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) / math.sqrt(n)
    return mean, mean - T_975_2 * se, mean + T_975_2 * se


@pytest.mark.parametrize("df, value", [(1, 12.706204736174707), (2, T_975_2), (4, 2.7764451051977987),
                                       (10, 2.2281388519649385), (30, 2.0422724563012373)])
def test_t_quantiles_match_the_table(df, value):
    assert t_quantile(0.975, df) == pytest.approx(value, rel=1e-9)
    assert t_two_sided_p(value, df) == pytest.approx(0.05, rel=1e-9)


def test_t_distribution_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")  # not a facecls dependency: only a cross-check
    for df in (1, 3, 7, 25):
        for t in (0.1, 1.0, 2.5, 6.0):
            assert t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-8)
    result = paired(RESULTS["b"], RESULTS["a"])
    assert result.p_value == pytest.approx(stats.ttest_rel(RESULTS["a"], RESULTS["b"]).pvalue, rel=1e-8)


def test_interval_and_paired_test_by_hand():
    low, high = t_interval(RESULTS["a"])
    half = T_975_2 * 0.02 / math.sqrt(3)
    assert (low, high) == pytest.approx((0.82 - half, 0.82 + half))
    result = paired(RESULTS["b"], RESULTS["a"])
    mean, low, high = hand_paired(RESULTS["b"], RESULTS["a"])
    assert result.n == 3 and result.mean == pytest.approx(mean) and result.interval == pytest.approx((low, high))
    assert result.p_value == pytest.approx(0.33942174092418, rel=1e-6)  # t = −1.2443 with 2 df


NEAR_ONE = [0.99, 1.0, 0.97, 1.0, 0.99]  # five fold accuracies: the raw t-interval's top is above 1


def test_bounded_metrics_have_their_interval_clipped_to_0_1():
    raw_low, raw_high = t_interval(NEAR_ONE)
    assert raw_high > 1.0  # what the clipping is for
    assert t_interval(NEAR_ONE, bounds=(0.0, 1.0)) == (raw_low, 1.0)
    low, high = t_interval([0.0, 0.01, 0.0, 0.03, 0.01])  # an ECE near 0: the bottom is below 0
    assert low < 0.0 and t_interval([0.0, 0.01, 0.0, 0.03, 0.01], bounds=(0.0, 1.0)) == (0.0, high)
    for metric in ("test_acc", "best_val_acc", "test_macro_f1", "test_weighted_f1", "test_balanced_acc",
                   "test_top5", "test_ece", "val_acc"):
        assert metric_bounds(metric) == (0.0, 1.0), metric
    for metric in ("test_loss", "test_nll", "val_loss", "epochs_run", "wall_seconds", "best_epoch"):
        assert metric_bounds(metric) is None, metric


def test_summarize_clips_the_accuracy_interval_but_not_a_loss(tmp_path):
    root = make_runs(tmp_path / "sweep", {"a": NEAR_ONE, "b": [0.5, 0.6, 0.7, 0.6, 0.5]}, seeds=range(5))
    for path in root.glob("a_*/metrics.json"):  # a loss with the very same numbers: may exceed 1
        metrics = json.loads(path.read_text())
        path.write_text(json.dumps({**metrics, "test_loss": metrics["test_acc"]}))
    summary, _ = write_summary([root], plots=False)
    groups = {g["reg"]: g for g in read_csv(root / "summary_groups.csv")}
    raw_low, raw_high = t_interval(NEAR_ONE)
    assert (float(groups["a"]["test_acc_ci95_low"]), float(groups["a"]["test_acc_ci95_high"])) == pytest.approx(
        (raw_low, 1.0))
    assert float(groups["b"]["test_acc_ci95_high"]) < 1.0  # an interval inside [0, 1] is left as it is
    assert f"[{raw_low:.3f}, 1.000]" in (root / "summary.md").read_text()
    a = next(g for g in summary.groups if g.label == "reg=a")
    assert a.stat("test_loss").ci == pytest.approx((raw_low, raw_high))  # not a proportion: never clipped


@pytest.mark.parametrize("reference, other, verdict", [
    ([0.8, 0.8, 0.8], [0.81, 0.79, 0.80], "within noise"),   # CI around 0
    ([0.8, 0.8, 0.8], [0.90, 0.91, 0.92], "higher"),         # CI above 0
    ([0.8, 0.8, 0.8], [0.70, 0.69, 0.71], "lower"),          # CI below 0
    ([0.8, 0.8], [0.85, 0.85], "higher"),                    # same difference every time: CI is that point
    ([0.8], [0.9], "too few pairs"),
    ([], [], "no shared runs"),
])
def test_within_noise_exactly_when_the_interval_holds_zero(reference, other, verdict):
    result = paired(reference, other)
    assert result.verdict == verdict
    if result.interval is not None:
        assert (result.interval[0] <= 0 <= result.interval[1]) == (verdict == "within noise")


def test_summary_files_show_ci_and_paired_comparison(tmp_path):
    root = make_runs(tmp_path / "sweep", RESULTS)
    summary, text = write_summary([root], plots=False)
    groups = {g["reg"]: g for g in read_csv(root / "summary_groups.csv")}
    a = groups["a"]
    half = T_975_2 * 0.02 / math.sqrt(3)
    assert a["test_acc_n"] == "3"
    assert float(a["test_acc_ci95_low"]) == pytest.approx(0.82 - half)
    assert float(a["test_acc_ci95_high"]) == pytest.approx(0.82 + half)
    # b has the best mean test accuracy (0.86): the reference of the default compare=best
    assert groups["b"]["compared_with"] == "(reference)" and groups["b"]["verdict"] == ""
    mean, low, high = hand_paired(RESULTS["b"], RESULTS["a"])
    assert a["compared_with"] == "reg=b" and a["diff_pairs"] == "3"
    assert float(a["diff_mean"]) == pytest.approx(mean)
    assert (float(a["diff_ci95_low"]), float(a["diff_ci95_high"])) == pytest.approx((low, high))
    assert float(a["diff_p"]) == pytest.approx(0.33942174092418, rel=1e-6)
    assert a["verdict"] == "within noise" and groups["c"]["verdict"] == "lower"

    markdown = (root / "summary.md").read_text()
    assert f"[{0.82 - half:.3f}, {0.82 + half:.3f}]" in markdown  # the CI column
    assert "## Paired comparison" in markdown
    assert f"| reg=a | reg=b | 3 | {mean:+.3f} | [{low:+.3f}, {high:+.3f}] | 0.339 | within noise |" in markdown
    assert markdown.count("within noise") == 1  # c is clearly lower, not noise
    assert "within noise" in text and "Paired comparison of test_acc with reg=b" in text


def test_compare_picks_the_reference_or_is_off(tmp_path):
    root = make_runs(tmp_path / "sweep", RESULTS)
    write_summary([root], plots=False, compare="reg:c")  # key:value, easy to type in a shell
    groups = {g["reg"]: g for g in read_csv(root / "summary_groups.csv")}
    assert groups["c"]["compared_with"] == "(reference)" and groups["a"]["verdict"] == "higher"
    write_summary([root], plots=False, compare="none")
    assert "verdict" not in read_csv(root / "summary_groups.csv")[0]
    assert "Paired comparison" not in (root / "summary.md").read_text()
    with pytest.raises(UserError, match="compare=reg:zzz matches no configuration"):
        write_summary([root], plots=False, compare="reg:zzz")
    with pytest.raises(UserError, match="compare_metric=loss"):
        write_summary([root], plots=False, compare_metric="loss")


def test_runs_pair_only_by_shared_seed(tmp_path):
    root = make_runs(tmp_path / "sweep", {"a": RESULTS["a"]})
    make_runs(root, {"d": [0.9, 0.9]}, seeds=(0, 5))  # only seed 0 is shared with a
    write_summary([root], plots=False)
    groups = {g["reg"]: g for g in read_csv(root / "summary_groups.csv")}
    assert groups["a"]["diff_pairs"] == "1" and groups["a"]["verdict"] == "too few pairs"

"""Paired comparisons between configurations (`facecls summarize … compare=`).

Two configurations run with the same seed and fold saw the same data split, initial weights
and batch order, so their difference on that pair is free of most of the run-to-run noise.
Each configuration is set against a reference one (by default the best by mean), pair by
pair; the mean difference gets a 95% t-interval and a paired t-test p-value, and a difference
whose interval includes 0 is marked "within noise".
"""
from __future__ import annotations

from dataclasses import dataclass

from facecls.errors import UserError
from facecls.sweeps.stats import Paired, paired
from facecls.sweeps.table import Group, Summary, canonical, shown

OFF = ("none", "null", "off", "false", "")


@dataclass
class Comparison:
    reference: Group
    other: Group
    metric: str
    result: Paired
    reference_keys: list[str]  # the averaged keys runs are paired by (seed, fold)


def _by_pair(group: Group, keys: list[str], metric: str) -> dict[str, float]:
    """The finished runs' ``metric`` keyed by their seed/fold values (the first run of a key wins)."""
    values: dict[str, float] = {}
    for run in group.finished:
        value = run.metric(metric)
        if value is not None:
            values.setdefault(canonical([run.setting(k) for k in keys]), float(value))
    return values


def _matches(group: Group, wanted: str) -> bool:
    if wanted == group.label:
        return True
    parts = [p.strip() for p in wanted.split(",") if p.strip()]
    for part in parts:
        key, sep, value = (part if "=" in part else part.replace(":", "=", 1)).partition("=")
        if not sep or key not in group.settings:
            return False
        if value not in (shown(group.settings[key]), canonical(group.settings[key])):
            return False
    return bool(parts)


def reference_group(summary: Summary, compare, metric: str) -> Group | None:
    """The configuration the others are compared with: ``best`` (highest mean ``metric``),
    a label such as ``reg=none`` (or ``reg:none``, easier on the command line), or None when off."""
    if compare is None or compare is False or str(compare).strip().lower() in OFF or len(summary.groups) < 2:
        return None
    if str(compare) == "best":
        scored = [g for g in summary.groups if g.stat(metric).mean is not None]
        return max(scored, key=lambda g: g.stat(metric).mean) if scored else None
    found = [g for g in summary.groups if _matches(g, str(compare))]
    if len(found) != 1:
        labels = "; ".join(g.label for g in summary.groups)
        how = "matches no configuration" if not found else f"matches {len(found)} configurations"
        raise UserError(f"compare={compare} {how} — use best, none or one of: {labels} (key:value also works).")
    return found[0]


def compare_groups(summary: Summary, compare="best", metric: str = "test_acc") -> list[Comparison]:
    """Every other configuration against the reference one, paired by the averaged keys."""
    reference = reference_group(summary, compare, metric)
    if reference is None:
        return []
    keys = summary.averaged_over
    base = _by_pair(reference, keys, metric)
    comparisons = []
    for group in summary.groups:
        if group is reference:
            continue
        values = _by_pair(group, keys, metric)
        shared = [k for k in base if k in values]
        comparisons.append(Comparison(reference, group, metric,
                                      paired([base[k] for k in shared], [values[k] for k in shared]), keys))
    return comparisons


def _signed(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def comparison_table(comparisons: list[Comparison]) -> tuple[list[str], list[list[str]]]:
    """One row per compared configuration: pairs, mean difference, its CI, p and the verdict."""
    metric = comparisons[0].metric if comparisons else "test_acc"
    headers = ["configuration", "vs", "pairs", f"Δ {metric}", "95% CI", "p", "verdict"]
    rows = []
    for c in comparisons:
        r = c.result
        ci = "—" if r.interval is None else f"[{r.interval[0]:+.3f}, {r.interval[1]:+.3f}]"
        rows.append([c.other.label, c.reference.label, str(r.n), _signed(r.mean), ci,
                     "—" if r.p_value is None else f"{r.p_value:.3g}", r.verdict])
    return headers, rows


def add_to_group_rows(rows: list[dict], summary: Summary, comparisons: list[Comparison]) -> list[dict]:
    """summary_groups.csv gains the comparison columns (empty for the reference itself)."""
    found = {id(c.other): c for c in comparisons}
    for row, group in zip(rows, summary.groups):
        c = found.get(id(group))
        if not comparisons:
            continue
        r = c.result if c else None
        row.update({"compared_with": comparisons[0].reference.label if c else "(reference)",
                    "diff_pairs": r.n if r else None, "diff_mean": r.mean if r else None,
                    "diff_ci95_low": r.interval[0] if r and r.interval else None,
                    "diff_ci95_high": r.interval[1] if r and r.interval else None,
                    "diff_p": r.p_value if r else None, "verdict": r.verdict if r else ""})
    return rows

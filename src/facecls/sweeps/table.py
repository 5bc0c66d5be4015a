"""Compare runs: group them by the overrides that vary, average over seeds, render tables.

A *configuration* is one combination of the varying overrides other than the averaged
ones (``seed`` and ``data.split.fold`` by default); its numbers are mean ± sample std over its
finished runs, with n and a 95% t-interval of the mean (clipped to [0, 1] for proportions such
as accuracy: stats.metric_bounds). A paired comparison (``compare=``)
sets each configuration against a reference one, run by run where they share seed and fold.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable

from facecls.io import csv_text
from facecls.sweeps.runs import RunRecord
from facecls.sweeps.stats import metric_bounds, t_interval

AVERAGED_METRICS = ("test_acc", "best_val_acc", "test_macro_f1", "verif_acc")  # verif_acc: sweeps/verification.py
SORT_KEYS = AVERAGED_METRICS
DEFAULT_AVERAGE_OVER = ("seed", "data.split.fold")
RUN_METRICS = ("best_val_acc", "test_acc", "best_epoch", "epochs_run", "wall_seconds")


def canonical(value: Any) -> str:
    """A value as text, exact enough to tell two settings apart (grouping key)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{canonical(v)}" for k, v in value.items()) + "}"
    return str(value)


def shown(value: Any) -> str:
    """A value as text for people: floats with 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(shown(v) for v in value) + "]"
    return canonical(value)


@dataclass
class Stat:
    """Mean ± sample standard deviation of the values that are numbers, and the 95%
    t-interval of the mean (None with fewer than 2 values; clipped to ``bounds`` if given)."""

    mean: float | None
    std: float | None
    n: int
    ci: tuple[float, float] | None = None

    @classmethod
    def of(cls, values: Iterable[float | None], bounds: tuple[float, float] | None = None) -> "Stat":
        numbers = [v for v in values if v is not None and math.isfinite(v)]
        if not numbers:
            return cls(None, None, 0)
        std = statistics.stdev(numbers) if len(numbers) > 1 else None
        return cls(statistics.fmean(numbers), std, len(numbers), t_interval(numbers, bounds=bounds))

    def ci_text(self, digits: int = 3) -> str:
        return "—" if self.ci is None else f"[{self.ci[0]:.{digits}f}, {self.ci[1]:.{digits}f}]"

    def text(self, digits: int = 3) -> str:
        if self.mean is None:
            return "—"
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass
class Group:
    """The runs of one configuration."""

    settings: dict[str, Any]
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={shown(v)}" for k, v in self.settings.items()) or "all runs"

    @property
    def finished(self) -> list[RunRecord]:
        return [r for r in self.runs if r.finished]

    def stat(self, metric: str) -> Stat:
        return Stat.of((r.metric(metric) for r in self.finished), bounds=metric_bounds(metric))

    @property
    def problems(self) -> str:
        """Runs that did not end normally, counted by status: '1 failed, 1 diverged'."""
        counts: dict[str, int] = {}
        for r in self.runs:
            if r.status not in ("max_epochs", "early_stopping"):
                counts[r.status] = counts.get(r.status, 0) + 1
        return ", ".join(f"{n} {status}" for status, n in counts.items())


@dataclass
class Summary:
    runs: list[RunRecord]
    keys: list[str]                 # every override key, in order of first appearance
    group_keys: list[str]           # the varying keys that define a configuration
    averaged_over: list[str]        # varying keys averaged over (seed)
    constant: dict[str, Any]        # keys with one value in every run
    groups: list[Group]

    @property
    def varying(self) -> list[str]:
        return self.group_keys + self.averaged_over


def summarize_runs(runs: list[RunRecord], average_over: Iterable[str] = DEFAULT_AVERAGE_OVER,
                   sort: str | None = None) -> Summary:
    """Group ``runs`` by the overrides whose value differs between runs (except the
    ``average_over`` keys) and order the groups as first launched, or by ``sort``."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.overrides if k not in keys]
    values = {k: [r.setting(k) for r in runs] for k in keys}
    varying = [k for k in keys if len({canonical(v) for v in values[k]}) > 1]
    constant = {k: values[k][0] for k in keys if k not in varying}
    averaged = [k for k in varying if k in set(average_over)]
    group_keys = [k for k in varying if k not in averaged]
    groups: dict[str, Group] = {}
    for i, r in enumerate(runs):
        settings = {k: values[k][i] for k in group_keys}
        key = canonical(settings)
        groups.setdefault(key, Group(settings)).runs.append(r)
    ordered = list(groups.values())
    if sort is not None:
        def score(group: Group) -> float:  # configurations without a number go last
            mean = group.stat(sort).mean
            return -math.inf if mean is None else mean

        ordered.sort(key=score, reverse=True)
    return Summary(runs, keys, group_keys, averaged, constant, ordered)


# ---- rows -------------------------------------------------------------------------------

def _number(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def run_rows(summary: Summary) -> list[dict[str, Any]]:
    """One row per run: its name, status, every override, its metrics (summary.csv)."""
    rows = []
    for r in summary.runs:
        row = {"run": r.name, "status": r.status}
        row.update({k: canonical(r.setting(k)) for k in summary.keys})
        row.update({m: r.metric(m) for m in RUN_METRICS})
        row["precision"] = precision_of(r)
        row["note"] = r.note
        rows.append(row)
    return rows


def group_rows(summary: Summary) -> list[dict[str, Any]]:
    """One row per configuration with mean, std and n of each averaged metric."""
    rows = []
    for g in summary.groups:
        row = {k: canonical(v) for k, v in g.settings.items()}
        row.update(runs=len(g.runs), finished=len(g.finished))
        for metric in AVERAGED_METRICS:
            s = g.stat(metric)
            row.update({f"{metric}_mean": s.mean, f"{metric}_std": s.std, f"{metric}_n": s.n,
                        f"{metric}_ci95_low": s.ci[0] if s.ci else None,
                        f"{metric}_ci95_high": s.ci[1] if s.ci else None})
        row["epochs_mean"] = Stat.of(r.metric("epochs_run") for r in g.finished).mean
        row["wall_seconds_mean"] = Stat.of(r.metric("wall_seconds") for r in g.finished).mean
        row["problems"] = g.problems
        rows.append(row)
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return csv_text(columns, (["" if row.get(k) is None else row.get(k) for k in columns] for row in rows))


# ---- tables for people ---------------------------------------------------------------------

def configuration_table(summary: Summary) -> tuple[list[str], list[list[str]]]:
    headers = [*summary.group_keys, "runs", "test acc", "best val acc", "n", "test acc 95% CI",
               "best val acc 95% CI", "test macro-F1", "epochs", "wall s", "problems"]
    rows = []
    for g in summary.groups:
        epochs = Stat.of(r.metric("epochs_run") for r in g.finished).mean
        wall = Stat.of(r.metric("wall_seconds") for r in g.finished).mean
        test, val = g.stat("test_acc"), g.stat("best_val_acc")
        rows.append([*(shown(v) for v in g.settings.values()), str(len(g.runs)), test.text(), val.text(),
                     str(test.n), test.ci_text(), val.ci_text(), g.stat("test_macro_f1").text(),
                     _number(epochs, 1), _number(wall, 1), g.problems])
    if any(g.stat("verif_acc").n for g in summary.groups):  # verify.json folds (sweeps/verification.py)
        at = headers.index("test macro-F1")
        headers[at:at] = ["verif acc", "verif n", "verif acc 95% CI"]
        for row, g in zip(rows, summary.groups):
            verif = g.stat("verif_acc")
            row[at:at] = [verif.text(), str(verif.n), verif.ci_text()]
    return headers, rows


def runs_table(summary: Summary) -> tuple[list[str], list[list[str]]]:
    headers = ["run", "status", *summary.varying, "best val acc", "test acc", "best epoch", "epochs",
               "wall s", "precision", "note"]
    rows = []
    for r in summary.runs:
        epoch = r.metric("best_epoch")
        epochs = r.metric("epochs_run")
        rows.append([r.name, r.status, *(shown(r.setting(k)) for k in summary.varying),
                     _number(r.metric("best_val_acc")), _number(r.metric("test_acc")),
                     "" if epoch is None else str(int(epoch)), "" if epochs is None else str(int(epochs)),
                     _number(r.metric("wall_seconds"), 1), precision_of(r) or "", r.note])
    return headers, rows


def precision_of(run: RunRecord) -> str | None:
    """bf16 / fp16 / fp32 as the run recorded it (trainer.amp=auto differs between machines)."""
    value = (run.metrics or {}).get("precision")
    return value if isinstance(value, str) else None


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to line up in a terminal."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    def cell(x: str) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)

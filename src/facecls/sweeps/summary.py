"""Compare every run under the given run or sweep dirs (`facecls summarize`, and a sweep's end).

Writes into ``out`` (default: the first dir) ``summary.csv`` (one row per run, every
override a column), ``summary_groups.csv`` (one row per configuration: mean, std, n),
``summary.md``, ``summary.png`` and ``curves_overlay.png``, and prints the configuration
table: mean ± std, n and the 95% t-interval of each configuration, and (``compare=``) the paired
difference of each configuration from a reference one, marked "within noise" when its interval
includes 0. Runs that failed, diverged, were interrupted or are still running are listed, not
dropped; only finished runs are averaged. Reads files only, so it works on a sweep while
it runs.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import yaml

from facecls.errors import UserError
from facecls.io import atomic_write_text, check_writable_dir
from facecls.sweeps.compare import Comparison, add_to_group_rows, compare_groups, comparison_table
from facecls.sweeps.figures import plot_curves_overlay, plot_summary
from facecls.sweeps.runs import read_runs
from facecls.sweeps.table import (
    AVERAGED_METRICS,
    DEFAULT_AVERAGE_OVER,
    SORT_KEYS,
    Summary,
    configuration_table,
    group_rows,
    markdown_table,
    run_rows,
    runs_table,
    shown,
    summarize_runs,
    text_table,
    to_csv,
)
from facecls.sweeps.verification import AVERAGE_OVER as VERIFY_AVERAGE_OVER
from facecls.sweeps.verification import VERIFY_METRICS, expand_verify_folds

CI_NOTE = ("95% CI: the t-interval of the mean over the runs — where the mean of many more such runs would "
           "fall, 19 times in 20; it needs n >= 2 and is wide for n < 5. Accuracies and F1 cannot leave [0, 1]: "
           "their interval is clipped to it.")
OPTUNA_RESULTS = "optimization_results.yaml"  # written by hydra-optuna-sweeper at the end
OPTUNA_TRIALS = "optuna_trials.csv"           # written by facecls while the study runs


@dataclass
class OptunaResult:
    sweep_dir: Path
    best_value: float | None
    best_params: dict
    trials: list[dict]


def read_optuna(dirs: Iterable[Path]) -> list[OptunaResult]:
    """The Optuna study results found in the given sweep dirs (if any)."""
    found = []
    for d in dirs:
        results_file, trials_file = d / OPTUNA_RESULTS, d / OPTUNA_TRIALS
        if not results_file.is_file() and not trials_file.is_file():
            continue
        results = yaml.safe_load(results_file.read_text(encoding="utf-8")) if results_file.is_file() else {}
        results = results or {}
        found.append(OptunaResult(d, results.get("best_value"), results.get("best_params") or {},
                                  _read_csv(trials_file)))
    return found


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _optuna_lines(results: list[OptunaResult]) -> list[str]:
    lines = []
    for res in results:
        states: dict[str, int] = {}
        for t in res.trials:
            states[t.get("state", "?")] = states.get(t.get("state", "?"), 0) + 1
        counted = ", ".join(f"{n} {s.lower()}" for s, n in states.items())
        lines.append(f"Optuna study in {res.sweep_dir.name}: {len(res.trials)} trials" +
                     (f" ({counted})" if counted else ""))
        if res.best_params:
            params = " ".join(f"{k}={shown(v)}" for k, v in res.best_params.items())
            value = f"{res.best_value:.4f}" if isinstance(res.best_value, (int, float)) else "?"
            lines.append(f"  best value {value} with: {params}")
        else:
            lines.append("  no best parameters yet (optimization_results.yaml is written when the study ends)")
    return lines


def _header(summary: Summary) -> list[str]:
    over = ", ".join(summary.averaged_over)
    lines = [f"{len(summary.runs)} runs, {len(summary.groups)} configurations"
             + (f" (mean ± std over {over}; only finished runs are averaged)" if over else "")]
    if over:
        lines.append(CI_NOTE)
    if summary.constant:
        lines.append("Same in every run: " + " ".join(f"{k}={shown(v)}" for k, v in summary.constant.items()))
    return lines


def _problem_lines(summary: Summary) -> list[str]:
    return [f"{r.name}: {r.status}" + (f" — {r.note}" if r.note else "")
            for r in summary.runs if r.status not in ("max_epochs", "early_stopping")]


def _comparison_lines(comparisons: list[Comparison], table) -> list[str]:
    if not comparisons:
        return []
    c = comparisons[0]
    return [f"Paired comparison of {c.metric} with {c.reference.label} (runs that share "
            f"{', '.join(c.reference_keys) or 'nothing'}; Δ = configuration − reference):", "",
            table(*comparison_table(comparisons))]


def terminal_report(summary: Summary, optuna: list[OptunaResult], comparisons: list[Comparison] = ()) -> str:
    parts = _header(summary) + ["", text_table(*configuration_table(summary))]
    if comparisons:
        parts += ["", *_comparison_lines(comparisons, text_table)]
    problems = _problem_lines(summary)
    if problems:
        parts += ["", "Runs that did not end normally:", *("  " + p for p in problems)]
    if optuna:
        parts += ["", *_optuna_lines(optuna)]
    return "\n".join(parts)


def markdown_report(summary: Summary, optuna: list[OptunaResult], comparisons: list[Comparison] = ()) -> str:
    parts = ["# Sweep summary", "", *_header(summary), "", "## Configurations", "",
             markdown_table(*configuration_table(summary)), ""]
    if comparisons:
        parts += ["## Paired comparison", "", *_comparison_lines(comparisons, markdown_table), ""]
    parts += ["![accuracy per configuration](summary.png)",
             "", "![validation accuracy per epoch](curves_overlay.png)", "", "## Runs", "",
             markdown_table(*runs_table(summary))]
    problems = _problem_lines(summary)
    if problems:
        parts += ["", "## Runs that did not end normally", "", *(f"- {p}" for p in problems)]
    if optuna:
        parts += ["", "## Optuna", "", *_optuna_lines(optuna)]
    return "\n".join(parts) + "\n"


def write_summary(dirs: list[str | Path], out: str | Path | None = None,
                  average_over: Iterable[str] = DEFAULT_AVERAGE_OVER, sort: str | None = None, plots: bool = True,
                  sweep_finished: bool = False, stale_after_min: float = 30.0, compare="best",
                  compare_metric: str = "test_acc") -> tuple[Summary, str]:
    """Read the runs under ``dirs``, write the summary files into ``out``; return the
    summary and its terminal text. ``compare``: best | none | a configuration label (the
    reference of the paired comparison), on ``compare_metric``."""
    if not dirs:
        raise UserError("no run dirs given — facecls summarize outputs/multirun/<date>/<time>_<id> "
                        "[more dirs] (or dirs=[A,B]).")
    if sort is not None and sort not in SORT_KEYS:
        raise UserError(f"sort={sort} — use one of: {', '.join(SORT_KEYS)} (or null: as launched).")
    if compare_metric not in AVERAGED_METRICS:
        raise UserError(f"compare_metric={compare_metric} — use one of: {', '.join(AVERAGED_METRICS)}.")
    runs = read_runs(dirs, sweep_finished=sweep_finished, stale_after_min=stale_after_min)
    if compare_metric in VERIFY_METRICS or sort in VERIFY_METRICS:  # each verify.json fold becomes a record
        runs = expand_verify_folds(runs)
        average_over = [*average_over, *VERIFY_AVERAGE_OVER]
    if not runs:
        raise UserError(f"no run dirs under {', '.join(map(str, dirs))} — a run dir holds metrics.json or "
                        ".hydra/overrides.yaml; pass a run dir or a sweep dir (outputs/multirun/…).")
    out = check_writable_dir(Path(out if out is not None else dirs[0]).expanduser(), need_bytes=2**20,
                             what="summary", fix="write it elsewhere with out=DIR")
    summary = summarize_runs(runs, average_over=list(average_over), sort=sort)
    comparisons = compare_groups(summary, compare, compare_metric)
    optuna = read_optuna(Path(d).expanduser() for d in dirs)
    atomic_write_text(out / "summary.csv", to_csv(run_rows(summary)))
    atomic_write_text(out / "summary_groups.csv", to_csv(add_to_group_rows(group_rows(summary), summary, comparisons)))
    atomic_write_text(out / "summary.md", markdown_report(summary, optuna, comparisons))
    if plots:
        plot_summary(summary, out / "summary.png")
        plot_curves_overlay(summary, out / "curves_overlay.png")
    return summary, terminal_report(summary, optuna, comparisons)

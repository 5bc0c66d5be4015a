"""report.md: one heading per section with its command, table and figures."""
from __future__ import annotations

import csv
import datetime
import os
from pathlib import Path

from facecls.io import atomic_write_text
from facecls.sweeps.runs import read_runs

METRIC_COLUMNS = [("best_train_acc", "train acc"), ("best_val_acc", "val acc"), ("test_acc", "test acc"),
                  ("test_macro_f1", "test macro-F1"),
                  ("best_train_loss", "train loss"), ("best_val_loss", "val loss"), ("test_loss", "test loss"),
                  ("best_epoch", "best epoch"), ("epochs_run", "epochs")]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "–" if value is None else str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _rel(path: Path, out: Path) -> str:
    return Path(os.path.relpath(path, out)).as_posix()


def runs_table(runs_dir: Path) -> list[str]:
    """Train/val/test accuracy and loss of every run, with the overrides that differ between runs."""

    records = read_runs([runs_dir], sweep_finished=True)
    keys = sorted({k for r in records for k in r.overrides})
    varying = [k for k in keys if len({str(r.overrides.get(k)) for r in records}) > 1]
    header = ["run", *varying, *(name for _, name in METRIC_COLUMNS), "stop"]
    rows = [[r.name, *(str(r.overrides.get(k)) for k in varying), *(r.metric(m) for m, _ in METRIC_COLUMNS),
             r.status if r.status != "max_epochs" else "max epochs"] for r in records]
    return _table(header, rows)


def csv_table(path: Path, columns: list[str] | None = None) -> list[str]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    columns = columns or list(rows[0])
    return _table(columns, [[_number(row.get(c)) for c in columns] for row in rows])


def _number(text):
    try:
        return float(text) if "." in str(text) else text
    except (TypeError, ValueError):
        return text


def _section_lines(result: dict, out: Path) -> list[str]:
    section, outcome = result["section"], result["outcome"]
    lines = [f"## {section.title}", ""]
    if section.experiment:
        extra = "".join(f" '{o}'" for o in result.get("extra", []))  # report.extra_regularisers' rows
        lines += [f"Re-run: `facecls train experiment={section.experiment}{extra}`" +
                  (" (a sweep: one run dir per configuration)" if section.sweep else ""), ""]
    if section.reuse:
        lines += [f"Uses the run of section {section.reuse}.", ""]
    if not outcome.ok:
        label = "Skipped" if section.alexnet and result["runs"] is None else "Problem"
        lines += [f"> **{label}:** {outcome.message}", ""]
    lines += [f"> Note: {note}" for note in result["notes"]] + ([""] if result["notes"] else [])
    tool_dir = out / section.id
    for command in section.tools:
        rf_csv = tool_dir / command[-1].split("/")[-1] / "rf.csv"
        if rf_csv.is_file():
            lines += [f"`facecls {' '.join(command[:-1])}`:", "",
                      *csv_table(rf_csv, ["label", "type", "kernel", "stride", "padding", "output", "jump", "rf"])]
    if result["runs"] is not None and not section.reuse:
        lines += runs_table(result["runs"])
        for name, caption in (("summary.png", "accuracy per configuration"),
                              ("curves_overlay.png", "validation accuracy of every configuration")):
            if (result["runs"] / name).is_file():
                lines += [f"![{caption}]({_rel(result['runs'] / name, out)})", ""]
    lines += result.get("lines", [])  # a section's own tables (report/open_set.py)
    for figure, files, command in result["figures"]:
        caption = figure.caption[0].upper() + figure.caption[1:]
        title = f"**Figure {figure.number}.** {caption}" if figure.number else f"*{caption}*"
        if not files:
            lines += [f"{title}: not drawn (see the notes above).", ""]
            continue
        lines += [title + (f" — `facecls {' '.join(command)}`" if command else ""), ""]
        lines += [f"![{figure.caption}]({_rel(f, out)})" for f in files] + [""]
        for csv_file in sorted({f.parent / "robustness.csv" for f in files if f.name == "robustness.png"}):
            lines += csv_table(csv_file)
    return lines


def write_report(out: Path, results: dict, cfg, report_cfg: dict, seconds: float, data: list[str]) -> Path:
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = ["# facecls report", "",
             f"Data: `{' '.join(data)}` · budget `{report_cfg['budget']}` · generated {date} in "
             f"{seconds / 60:.1f} min.", "",
             "Figure numbers follow the course report. Each section names the command that re-runs it; "
             "every number comes from that run's `metrics.json` (train/val at the best epoch, test of "
             "the best checkpoint).", ""]
    lines += [f"- {r['section'].title}" + ("" if r["outcome"].ok else " *(skipped)*" if r["runs"] is None
                                             else " *(with problems)*") for r in results.values()] + [""]
    for result in results.values():
        lines += _section_lines(result, out)
    return atomic_write_text(out / "report.md", "\n".join(lines) + "\n")

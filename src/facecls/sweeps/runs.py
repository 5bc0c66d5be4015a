"""Find run dirs and read what each one holds: its overrides, metrics and history.

A run dir is a folder with ``metrics.json`` or ``.hydra/overrides.yaml`` (Hydra writes the
latter when the job starts, so a job that failed or is still running is found too).
"""
from __future__ import annotations

import csv
import json
import os
import re
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from facecls.errors import UserError

# Stop reasons of a run that trained to its end (its numbers are averaged). Every other
# status (interrupted, failed, running, incomplete) is listed but not averaged.
FINISHED = ("max_epochs", "early_stopping", "diverged")
ERROR_MARKERS = ("facecls: error:", "facecls: job failed:")
SKIP_DIRS = {".hydra", "checkpoints", ".submitit", "__pycache__"}


@dataclass
class RunRecord:
    """One run dir, read once. ``overrides`` maps each command-line key to its parsed value."""

    path: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    metrics: dict | None = None
    history: list[dict] = field(default_factory=list)
    status: str = "incomplete"
    note: str = ""
    name: str = ""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def metric(self, key: str) -> int | float | None:
        """A number from metrics.json (None when absent or not a number)."""
        value = (self.metrics or {}).get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def setting(self, key: str) -> Any:
        """The value of ``key`` in this run: its override, else the config group choice or
        config value it ran with (so runs of different sweeps compare correctly)."""
        if key in self.overrides:
            return self.overrides[key]
        choices = ((self._hydra_yaml.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
        if key in choices:
            return choices[key]
        node: Any = self._config_yaml
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    @cached_property
    def _hydra_yaml(self) -> dict:
        return _load_yaml(self.path / ".hydra" / "hydra.yaml")

    @cached_property
    def _config_yaml(self) -> dict:
        return _load_yaml(self.path / ".hydra" / "config.yaml")


def _load_yaml(path: Path) -> dict:
    try:
        # Plain YAML: interpolations such as ${uid:} stay text and are never resolved.
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: bytes that are not UTF-8
        return {}
    return data if isinstance(data, dict) else {}


class Unreadable(Exception):
    """A file of a run dir that is there but cannot be read as what it should be."""


def _read_overrides(path: Path) -> list:
    try:
        lines = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise Unreadable(f"{path.name} is not readable YAML ({type(err).__name__})") from None
    if not isinstance(lines, list):
        raise Unreadable(f"{path.name} is not a list of overrides")
    return lines


def _read_metrics(path: Path) -> dict:
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # truncated, not JSON, not UTF-8
        raise Unreadable(f"metrics.json is not readable JSON ({type(err).__name__})") from None
    if not isinstance(metrics, dict):
        raise Unreadable(f"metrics.json holds a JSON {type(metrics).__name__}, not an object")
    return metrics


def is_run_dir(path: Path) -> bool:
    return (path / "metrics.json").is_file() or (path / ".hydra" / "overrides.yaml").is_file()


def _natural_key(path: Path) -> list:
    """Sort job 2 before job 10."""
    return [[int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part)] for part in path.parts]


def find_run_dirs(paths: list[str | os.PathLike]) -> list[Path]:
    """Every run dir at or below ``paths`` (not looking inside a run dir), naturally sorted."""
    found: set[Path] = set()
    for given in paths:
        root = Path(os.path.expanduser(str(given)))
        if not root.is_dir():
            raise UserError(f"'{given}' is not a folder — pass run dirs or sweep dirs, e.g. "
                            "facecls summarize outputs/multirun/<date>/<time>_<id>.")
        for dirpath, dirnames, _ in os.walk(root):
            here = Path(dirpath)
            if is_run_dir(here):
                found.add(here.resolve())
                dirnames[:] = []  # a run dir's sub-folders are its own outputs
            else:
                dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
    return sorted(found, key=_natural_key)


def parse_overrides(lines: list[str]) -> dict[str, Any]:
    """``["optim.lr=1e-3", "reg=[dropout,early_stopping]"]`` → ``{"optim.lr": 0.001, "reg": [...]}``
    with Hydra's own parser, so 1e-3 and 0.001 are the same value."""

    try:
        overrides = OverridesParser.create().parse_overrides([str(x) for x in lines])
    except HydraException:  # written by another tool or version: keep the text
        return {k.lstrip("+~"): v for k, _, v in (str(x).partition("=") for x in lines)}
    parsed = {}
    for override in overrides:
        if override.is_delete():
            continue
        parsed[override.key_or_group] = override.value()
    return parsed


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    try:
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                try:
                    rows.append({k: float(v) for k, v in row.items() if isinstance(k, str) and v not in (None, "")})
                except (TypeError, ValueError):
                    continue  # a half-written line from a run being written right now
    except (OSError, ValueError, csv.Error):  # not UTF-8, NUL bytes: the curves are lost, not the summary
        return rows
    return rows


def _error_line(log_file: Path) -> str | None:
    """The last ``facecls: error: …`` line of a job log (how a failed job reports itself)."""
    if not log_file.is_file():
        return None
    found = None
    with log_file.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            for marker in ERROR_MARKERS:
                if marker in line:
                    found = line.split(marker, 1)[1].strip()
    return found


def _last_write(path: Path) -> float:
    times = [p.stat().st_mtime for p in (path / "train.log", path / "history.csv",
                                         path / ".hydra" / "overrides.yaml") if p.exists()]
    return max(times, default=0.0)


def read_run(path: Path, sweep_finished: bool = False, stale_after_min: float = 30.0) -> RunRecord:
    """Read one run dir and decide its status.

    With metrics.json the status is its stop_reason. Without it: ``failed`` when the job
    log holds a ``facecls: error:`` line, ``running`` when the dir was written to in the
    last ``stale_after_min`` minutes (and the sweep is not known to be over), else
    ``incomplete`` (killed, or crashed without a word). A metrics.json or overrides.yaml that
    is there but broken (truncated, not UTF-8, not the right shape) makes it ``unreadable``.
    """
    record = RunRecord(path=path)
    problems = []  # files that are there but broken: the run is listed as unreadable, the others summarised
    overrides_file = path / ".hydra" / "overrides.yaml"
    if overrides_file.is_file():
        try:
            record.overrides = parse_overrides(_read_overrides(overrides_file))
        except Unreadable as err:
            problems.append(str(err))
    metrics_file = path / "metrics.json"
    if metrics_file.is_file():
        try:
            record.metrics = _read_metrics(metrics_file)
        except Unreadable as err:
            problems.append(str(err))
    record.history = read_history(path / "history.csv")
    if problems:
        record.status, record.note = "unreadable", "; ".join(problems)
        return record
    error = _error_line(path / "train.log")
    if record.metrics is not None:
        record.status = str(record.metrics.get("stop_reason") or "incomplete")
        if record.status not in ("max_epochs", "early_stopping") and error:
            record.note = error  # why it diverged / was interrupted / failed
    elif error is not None:
        record.status, record.note = "failed", error
    else:
        idle_min = (time.time() - _last_write(path)) / 60
        if not sweep_finished and idle_min < stale_after_min:
            record.status = "running"
            record.note = f"{len(record.history)} epoch(s) so far"
        else:
            record.status = "incomplete"
            record.note = "no metrics.json and no error message (killed or crashed?) — see train.log"
    return record


def read_runs(paths: list[str | os.PathLike], sweep_finished: bool = False,
              stale_after_min: float = 30.0) -> list[RunRecord]:
    """Read every run dir under ``paths``; ``name`` is each dir relative to their common parent."""
    dirs = find_run_dirs(paths)
    records = [read_run(d, sweep_finished, stale_after_min) for d in dirs]
    if records:
        base = Path(os.path.commonpath([str(r.path) for r in records]))
        if len(records) == 1:
            base = base.parent
        for r in records:
            r.name = r.path.relative_to(base).as_posix() or r.path.name
    return records

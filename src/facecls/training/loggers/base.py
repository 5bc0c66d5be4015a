"""The logger interface every tracker implements, and :class:`Loggers`, the set of trackers one
run reports to, which turns a failing tracker off instead of failing the run.

A tracker is one class here (a module per tracker) and one yaml in conf/logger/ naming it
with ``_target_``. The csv files (history.csv, metrics.json, figures) are not a tracker:
``RunRecorder`` and ``finish_run`` always write them.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from facecls.errors import UserError, one_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunInfo:
    """What a tracker learns about the run when it starts."""

    run_dir: Path                 # absolute
    output_dir: Path              # paths.output_dir, absolute (where a shared store may live)
    config: dict                  # the resolved train config, plain containers
    overrides: dict = field(default_factory=dict)  # the run's command-line overrides (key → value)
    experiment: str | None = None  # the experiment config's name (experiment=…), if any
    resumed: bool = False         # continuing an interrupted run (resume=…)
    sweep_dir: Path | None = None  # a multirun's sweep dir (absolute) when this run is one of its jobs


class RunLogger:
    """One tracker. ``fit`` never calls it per batch: the run reports per finished epoch."""

    name = "logger"

    def start(self, info: RunInfo) -> None:
        """Open (or, when ``info.resumed``, reopen) this run's record."""

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """One finished epoch: history.csv's columns plus images_per_second."""

    def log_files(self, paths: list[Path]) -> None:
        """The run's result files (metrics.json, history.csv, figures) once written."""

    def log_final(self, metrics: dict) -> None:
        """metrics.json's content (test scores, stop_reason, …)."""

    def finish(self, status: str) -> None:
        """Close the record: status is FINISHED, KILLED (interrupted) or FAILED."""


def require(module: str, extra: str, logger: str):
    """Import ``module`` or stop with the one line that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"logger={logger} needs the {module.split('.')[0]} package — "
                        f"pip install 'facecls[{extra}]'") from None


class Loggers:
    """The trackers of one run, called in order. A tracker that raises is warned about once,
    turned off for the rest of the run, and named in :attr:`failures`; the others and the csv
    files carry on (trackers never cost a result)."""

    def __init__(self, loggers: list[RunLogger]):
        self.active = list(loggers)
        self.names = [lg.name for lg in loggers]
        self.failures: dict[str, str] = {}  # tracker name → what failed

    def __bool__(self) -> bool:
        return bool(self.names)

    def _call(self, method: str, *args) -> None:
        for lg in list(self.active):
            try:
                getattr(lg, method)(*args)
            except Exception as err:  # a tracker's fault must never end training
                self.active.remove(lg)
                self.failures[lg.name] = f"{method}: {type(err).__name__}: {shorten(one_line(str(err)))}"
                log.warning("logger %s failed (%s) and is turned off for this run; the csv files are "
                            "written as usual.", lg.name, self.failures[lg.name])
                if method != "finish":
                    try:  # release what it holds (files, an open run) without a second warning
                        lg.finish("FAILED")
                    except Exception:
                        pass

    def start(self, info: RunInfo) -> None:
        self._call("start", info)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._call("log_epoch", epoch, metrics)

    def log_files(self, paths: list[Path]) -> None:
        self._call("log_files", paths)

    def log_final(self, metrics: dict) -> None:
        self._call("log_final", metrics)

    def finish(self, status: str) -> None:
        self._call("finish", status)
        self.active = []

    def summary(self) -> dict:
        """What metrics.json records about the trackers (empty when only the csv files are written)."""
        return {"loggers": self.names, "logger_failures": dict(self.failures)} if self.names else {}


def shorten(text: str, limit: int = 300) -> str:
    """An error message cut to one readable warning (an HTTP client's can run to kilobytes)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def numeric_items(metrics: dict) -> dict[str, float]:
    """The plain numbers of a metrics dict (bools, None, lists and strings left out)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock on ``path`` (created if need be) between processes: parallel sweep jobs
    (joblib, submitit) that set up one shared store or one parent run take turns."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (parallel jobs may then race once, and warn)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

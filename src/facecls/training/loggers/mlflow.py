"""MLflow (logger=mlflow): one MLflow run per training run, by default in a SQLite database
beside the runs (``sqlite:///<paths.output_dir>/mlflow.db``, artifacts in <paths.output_dir>/mlartifacts).
Params = the flattened resolved config, metrics per epoch (step = epoch) and the final ones,
tags (stop_reason, run dir, facecls version, git commit), artifacts = metrics.json, history.csv,
the figures and, with log_checkpoint=true, best.pt. A sweep (-m) becomes a parent run with one
nested run per job (its id and tracking URI in <sweep dir>/mlflow_parent_run_id); the sweep's
callback ends it when the multirun ends (:func:`end_sweep_parent`: FAILED if any job did not
finish normally). A resumed run continues the same MLflow run:
its id (and tracking URI) is kept in <run dir>/mlflow_run_id.

Uses ``MlflowClient`` rather than mlflow's global "active run", so several runs in one
process (a basic-launcher sweep) never mix."""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import facecls
from facecls.training.loggers.base import RunInfo, RunLogger, file_lock, numeric_items, require

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
PARENT_ID_FILE = "mlflow_parent_run_id"  # in a sweep dir
BATCH = 100  # MLflow's limit of params (and tags) per log_batch call


class StoreNotWritable(RuntimeError):
    """A local MLflow store facecls cannot write (turned into the tracker's one warning)."""


def check_store(uri: str) -> None:
    """Fail at once, in one line, for a local store (``sqlite:///FILE``, ``file:DIR`` or a plain
    path) that cannot be written: handed over, MLflow retries a read-only SQLite database with
    back-off (measured: 113 s and ten retry warnings). A server URI is left to its own timeouts
    (http_retries, http_timeout)."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):]).expanduser()
        folder = path.parent
    elif uri.startswith("file:") or "://" not in uri and uri:
        path = folder = Path(urlparse(uri).path if uri.startswith("file:") else uri).expanduser()
    else:
        return
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"'{existing}' is a file")
        fd, probe = tempfile.mkstemp(prefix=".facecls-write-check.", dir=existing)  # SQLite writes a journal beside
        os.close(fd)
        os.unlink(probe)
        if path.is_file():
            with open(path, "ab"):
                pass
    except OSError as err:
        raise StoreNotWritable(f"the MLflow store {uri} is not writable ({(err.strerror or str(err)).lower()}) — "
                               "set logger.mlflow.tracking_uri to a writable place") from None


class MlflowLogger(RunLogger):
    name = "mlflow"

    def __init__(self, tracking_uri: str | None = None, experiment_name: str | None = None,
                 log_checkpoint: bool = False, http_retries: int = 2, http_timeout: int = 10):
        require("mlflow", "mlflow", "mlflow")
        self.tracking_uri, self.experiment_name = tracking_uri, experiment_name
        self.log_checkpoint = bool(log_checkpoint)
        # mlflow's own defaults (7 retries with backoff, 120 s timeouts) would let an unreachable
        # server hold a run for minutes; read by mlflow at each request, a user's env wins.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(int(http_retries)))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(http_timeout)))
        self.client = None
        self.run_id: str | None = None
        self.info: RunInfo | None = None

    def start(self, info: RunInfo) -> None:
        from mlflow import MlflowClient

        self.info = info
        id_file = info.run_dir / RUN_ID_FILE
        if info.resumed and id_file.is_file():
            # The same MLflow run, in the store it was created in (unless tracking_uri says otherwise).
            run_id, _, first_uri = id_file.read_text().strip().partition("\n")
            check_store(self.tracking_uri or first_uri.strip() or "")
            self.client = MlflowClient(tracking_uri=self.tracking_uri or first_uri.strip() or None)
            self.run_id = run_id.strip()
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, "facecls.resumed", "true")
            return  # its params are the first start's (a changed value would be refused)
        uri, artifacts = self.tracking_uri, None
        lock = contextlib.nullcontext()
        if not uri:  # the default: a SQLite store shared by every run under paths.output_dir
            uri = f"sqlite:///{info.output_dir / 'mlflow.db'}"
            artifacts = (info.output_dir / "mlartifacts").as_uri()
            # creating the tables (first use) and the experiment are not safe to race
            lock = file_lock(info.output_dir / "mlflow.db.lock")
        check_store(uri)  # before MLflow: it retries a read-only database for minutes, warning each time
        with lock:
            self.client = MlflowClient(tracking_uri=uri)
            experiment_id = self._experiment(self.experiment_name or info.experiment or "facecls", artifacts)
        tags = self._tags(info)
        run_name = info.run_dir.name
        if info.sweep_dir is not None:  # a sweep job: a child of the sweep's parent run
            tags["mlflow.parentRunId"] = self._parent_run(experiment_id, info.sweep_dir)
            run_name = f"{info.sweep_dir.name}/{info.run_dir.relative_to(info.sweep_dir)}" \
                if info.run_dir.is_relative_to(info.sweep_dir) else run_name
        run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        id_file.write_text(f"{self.run_id}\n{uri}\n")  # line 1: the run id; line 2: its tracking URI
        params = [(k, v) for k, v in flatten(info.config).items()]
        self._log_batch(params=params)

    def _experiment(self, name: str, artifacts: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifacts)
        except Exception:  # another job created it first (a parallel sweep)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _parent_run(self, experiment_id: str, sweep_dir: Path) -> str:
        """The sweep's parent run: the first job creates it, the others (also in other
        processes) find its id in <sweep dir>/mlflow_parent_run_id (line 2: the tracking URI,
        for end_sweep_parent)."""
        id_file = sweep_dir / PARENT_ID_FILE
        with file_lock(sweep_dir / (PARENT_ID_FILE + ".lock")):
            if id_file.is_file():
                return id_file.read_text().split()[0]
            parent = self.client.create_run(experiment_id, run_name=sweep_dir.name,
                                            tags={"facecls.sweep_dir": str(sweep_dir),
                                                  "facecls.version": facecls.__version__})
            id_file.write_text(f"{parent.info.run_id}\n{self.client.tracking_uri}\n")
            return parent.info.run_id

    def _tags(self, info: RunInfo) -> dict:
        tags = {"facecls.run_dir": str(info.run_dir), "facecls.version": facecls.__version__}
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        return tags

    def _log_batch(self, metrics=(), params=()) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        params = [Param(k, str(v)[:6000]) for k, v in params]
        metrics = [Metric(k, v, now, step) for k, v, step in metrics]
        for i in range(0, max(len(params), len(metrics)), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + BATCH], params=params[i:i + BATCH])

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._log_batch(metrics=[(k, v, epoch) for k, v in metrics.items()])

    def log_files(self, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))
        best = self.info.run_dir / "checkpoints" / "best.pt"
        if self.log_checkpoint and best.is_file():
            self.client.log_artifact(self.run_id, str(best), artifact_path="checkpoints")

    def log_final(self, metrics: dict) -> None:
        step = int(metrics.get("epochs_run") or 0)
        self._log_batch(metrics=[(k, v, step) for k, v in numeric_items(metrics).items()])
        self.client.set_tag(self.run_id, "stop_reason", str(metrics.get("stop_reason")))

    def finish(self, status: str) -> None:
        if self.client is not None and self.run_id is not None:
            client, self.client = self.client, None
            client.set_terminated(self.run_id, status=status)
            # a sweep's parent run stays RUNNING until the multirun ends (end_sweep_parent)


def end_sweep_parent(sweep_dir: Path, failed: bool) -> str | None:
    """End the sweep's parent run (if its jobs made one) now that every job has ended: status
    FAILED when ``failed``, else FINISHED. Called by the sweep callback's on_multirun_end, in the
    process that launched the sweep; returns the status set (None: no parent run). A tracker
    never costs a result: an unreachable store is a warning."""
    id_file = Path(sweep_dir) / PARENT_ID_FILE
    if not id_file.is_file():
        return None
    run_id, _, uri = id_file.read_text().strip().partition("\n")
    status = "FAILED" if failed else "FINISHED"
    try:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=uri.strip() or None).set_terminated(run_id.strip(), status=status)
    except Exception as err:
        log.warning("could not end the sweep's MLflow parent run %s: %s", run_id.strip(), " ".join(str(err).split()))
        return None
    return status


def flatten(config, prefix: str = "") -> dict:
    """{"optim": {"lr": 0.001}} → {"optim.lr": 0.001}; lists stay one value."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def git_commit() -> str | None:
    """The commit of the facecls checkout this code runs from (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(facecls.__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None

"""A Hydra callback that keeps a sweep going past a crashed job, summarises it at the end and
ends the sweep's MLflow parent run (logger=mlflow) once every job has ended.

Configured in conf/hydra/default.yaml (``hydra.callbacks.sweep_summary``). Hydra calls
``on_job_end`` in the process that ran the job (a joblib worker, a SLURM node…) and
``on_multirun_end`` in the process that launched the sweep.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from facecls import errors
from facecls.config.task import failed_jobs
from facecls.sweeps.runs import read_runs

log = logging.getLogger(__name__)

# run statuses (sweeps.runs) of a job that did not end normally: its MLflow run is not FINISHED
NOT_FINISHED = ("failed", "incomplete", "diverged", "interrupted")


class SweepSummary(Callback):
    """``keep_going``: a job that crashed (an exception that is not a UserError) is logged
    with its traceback into its own log and reported to the sweeper as a job without a
    result, so neither the basic sweeper nor Optuna stops the sweep. ``summarize``: when
    the sweep ends, write ``facecls summarize``'s files into the sweep dir and print the
    table; jobs that failed make the command exit non-zero. Either way, a sweep with an MLflow
    parent run ends that run here — FAILED if any job did not end normally — and not when
    whichever job happens to end last."""

    def __init__(self, keep_going: bool = True, summarize: bool = True, plots: bool = True) -> None:
        self.keep_going, self.summarize, self.plots = keep_going, summarize, plots

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not self.keep_going or job_return.status != JobStatus.FAILED:
            return
        if config.hydra.mode != RunMode.MULTIRUN:
            return  # a single run keeps its traceback and exit status
        err = job_return._return_value
        log.error("facecls: job failed: %s: %s", type(err).__name__, errors.one_line(str(err)),
                  exc_info=(type(err), err, err.__traceback__))
        failed_jobs.add(f"{type(err).__name__}: {errors.one_line(str(err))}")
        job_return.status = JobStatus.COMPLETED
        job_return.return_value = None  # what a job that hit a UserError returns, too

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        runs = self._summarize(sweep_dir) if self.summarize else None
        if runs is not None:
            # Jobs in other processes (joblib, submitit) reported their failures there; the
            # files of the sweep dir are the one place that knows about every job.
            failed_jobs.replace([f"{r.name}: {r.note or r.status}" for r in runs
                                 if r.status in ("failed", "incomplete")])
        if (sweep_dir / "mlflow_parent_run_id").is_file():
            from facecls.training.loggers.mlflow import end_sweep_parent

            if runs is None:
                try:
                    runs = read_runs([sweep_dir], sweep_finished=True)
                except errors.UserError:  # no run dir to read: no job says how it ended
                    runs = []
            failed = bool(failed_jobs) or any(r.status in NOT_FINISHED for r in runs)
            status = end_sweep_parent(sweep_dir, failed)
            if status:
                log.info("MLflow: the sweep's parent run ended %s", status)

    def _summarize(self, sweep_dir: Path) -> list | None:
        """Write and print the summary; its runs (None when there is none)."""
        try:
            # imported here: it draws with matplotlib (≈0.8 s), which a single run's callbacks never need
            from facecls.sweeps.summary import write_summary

            summary, text = write_summary([sweep_dir], sweep_finished=True, plots=self.plots)
        except errors.UserError as err:  # e.g. no job got far enough to leave a run dir
            log.warning("No sweep summary: %s", errors.one_line(str(err)))
            return None
        except Exception:  # a summary bug must not hide the results of a finished sweep
            log.warning("Could not summarise the sweep in %s", sweep_dir, exc_info=True)
            return None
        print(f"\nSweep summary ({sweep_dir}/summary.md):\n{text}", flush=True)
        return summary.runs

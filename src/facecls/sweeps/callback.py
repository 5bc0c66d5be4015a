"""A Hydra callback that keeps a sweep going past a crashed job and summarises it at the end.

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
from facecls.sweeps.summary import write_summary

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    """``keep_going``: a job that crashed (an exception that is not a UserError) is logged
    with its traceback into its own log and reported to the sweeper as a job without a
    result, so neither the basic sweeper nor Optuna stops the sweep. ``summarize``: when
    the sweep ends, write ``facecls summarize``'s files into the sweep dir and print the
    table; jobs that failed make the command exit non-zero."""

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
        errors.failed_jobs.append(f"{type(err).__name__}: {errors.one_line(str(err))}")
        job_return.status = JobStatus.COMPLETED
        job_return.return_value = None  # what a job that hit a UserError returns, too

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.summarize:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        try:
            summary, text = write_summary([sweep_dir], sweep_finished=True, plots=self.plots)
        except errors.UserError as err:  # e.g. no job got far enough to leave a run dir
            log.warning("No sweep summary: %s", errors.one_line(str(err)))
            return
        except Exception:  # a summary bug must not hide the results of a finished sweep
            log.warning("Could not summarise the sweep in %s", sweep_dir, exc_info=True)
            return
        print(f"\nSweep summary ({sweep_dir}/summary.md):\n{text}", flush=True)
        # Jobs in other processes (joblib, submitit) reported their failures there; the
        # files of the sweep dir are the one place that knows about every job.
        errors.failed_jobs[:] = [f"{r.name}: {r.note or r.status}" for r in summary.runs
                                 if r.status in ("failed", "incomplete")]

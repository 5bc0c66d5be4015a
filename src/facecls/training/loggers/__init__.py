"""Experiment trackers (conf/logger/): TensorBoard and MLflow besides the csv files every run
writes. ``build_loggers(cfg.logger)`` instantiates the chosen ones; ``EpochLog`` is the reporter
``fit`` calls once per finished epoch: the run's files first, then the trackers. ``run_info`` and
``finish_loggers`` are what run_training tells them before and after training."""
from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from facecls.config.instantiate import instantiate
from facecls.io import atomic_write_json
from facecls.training.loggers.base import Loggers, RunInfo, RunLogger

__all__ = ["EpochLog", "Loggers", "RunInfo", "RunLogger", "build_loggers", "finish_loggers", "run_info"]


def build_loggers(cfg_logger) -> Loggers:
    """One tracker per keyed node of ``cfg.logger`` (logger=[tensorboard,mlflow]); none for logger=csv.
    A tracker whose package is missing stops here, before training, with its pip command."""
    loggers = []
    for name, node in (cfg_logger or {}).items():
        if node is None or "_target_" not in node:
            continue
        lg = instantiate(node, what=f"logger {name}")
        lg.name = name
        loggers.append(lg)
    return Loggers(loggers)


class EpochLog:
    """fit's reporter: the recorder (history.csv, checkpoints) always, then the trackers."""

    def __init__(self, recorder, loggers: Loggers, train_size: int):
        self.recorder, self.loggers, self.train_size = recorder, loggers, train_size

    def train_pass_finished(self) -> None:
        self.recorder.train_pass_finished()  # the checkpoint snapshot; trackers only hear of finished epochs

    def epoch_finished(self, result, improved: bool) -> None:
        self.recorder.epoch_finished(result, improved)  # the files first: a tracker can never cost them
        if self.loggers.active:
            row = result.history[-1]
            values = {k: float(v) for k, v in row.items() if k != "epoch"}
            values["images_per_second"] = self.train_size / row["seconds"] if row["seconds"] else 0.0
            self.loggers.log_epoch(int(row["epoch"]), values)


# FitResult.stop_reason → the status a tracker's run ends with
STATUS = {"interrupted": "KILLED", "diverged": "FAILED"}


def finish_loggers(loggers: Loggers, metrics: dict, run_dir: Path, stop_reason: str) -> None:
    """Send the final metrics and result files to the trackers and close them; when one failed
    only now, metrics.json (already written) gets the updated ``logger_failures``."""
    loggers.log_final(metrics)
    files = [run_dir / "metrics.json", run_dir / "history.csv", *sorted(run_dir.glob("*.png")),
             *sorted(p for p in run_dir.glob("*.csv") if p.name != "history.csv")]
    loggers.log_files([p for p in files if p.is_file()])
    loggers.finish(STATUS.get(stop_reason, "FINISHED"))
    if loggers.failures != metrics.get("logger_failures"):
        metrics.update(loggers.summary())
        atomic_write_json(run_dir / "metrics.json", metrics)


def run_info(cfg: DictConfig, run_dir: Path, resumed: bool) -> RunInfo:
    """What the trackers are told at start: the resolved config, and from Hydra (when it runs
    the job) the command-line overrides and the experiment config's name."""
    overrides, experiment, sweep_dir = {}, None, None
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        experiment = hydra_cfg.runtime.choices.get("experiment")
        if hydra_cfg.mode == RunMode.MULTIRUN:
            sweep_dir = Path(hydra_cfg.sweep.dir).resolve()
        for text in hydra_cfg.overrides.task:
            key, _, value = text.partition("=")
            key = key.lstrip("+~")
            if not key.startswith("hydra") and key not in ("resume", "data.root"):
                overrides[key] = _scalar(value)
    return RunInfo(run_dir=Path(run_dir).resolve(), output_dir=Path(cfg.paths.output_dir).resolve(),
                   config=OmegaConf.to_container(cfg, resolve=True), overrides=overrides,
                   experiment=experiment, resumed=resumed, sweep_dir=sweep_dir)


def _scalar(text: str):
    """An override's value as a number when it is one (HParams can then sort it)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text

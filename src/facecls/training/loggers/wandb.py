"""Weights & Biases (logger=wandb): one W&B run per training run, its local files in
<run dir>/wandb. Config = the resolved train config, per-epoch metrics (step = epoch), the final
metrics as the run's summary, the result files (metrics.json, history.csv, figures, the csv
tables) saved with the run. A sweep (-m) groups its jobs under the sweep dir's name; a resumed
run continues the same W&B run (its id is kept in <run dir>/wandb_run_id).

``mode`` null leaves the choice to wandb (``WANDB_MODE``, ``wandb login``); ``offline`` writes
the run to disk only — ``wandb sync <run dir>/wandb/offline-run-*`` uploads it later. Each run is
its own ``wandb.Run`` object (``reinit="create_new"``), so the jobs of a basic-launcher sweep in
one process never share a run."""
from __future__ import annotations

from pathlib import Path

from facecls.training.loggers.base import RunInfo, RunLogger, numeric_items, require

RUN_ID_FILE = "wandb_run_id"
EXIT_CODES = {"FINISHED": 0, "KILLED": 130, "FAILED": 1}  # W&B marks a run by its exit code


class WandbLogger(RunLogger):
    name = "wandb"

    def __init__(self, project: str | None = "facecls", entity: str | None = None, mode: str | None = None,
                 tags: list | None = None, save_files: bool = True):
        self.wandb = require("wandb", "wandb", "wandb")
        self.project, self.entity, self.mode = project, entity, mode
        self.tags = list(tags or [])
        self.save_files = bool(save_files)
        self.run = None
        self.info: RunInfo | None = None

    def start(self, info: RunInfo) -> None:
        self.info = info
        id_file = info.run_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if info.resumed and id_file.is_file() else None
        group = info.sweep_dir.name if info.sweep_dir is not None else None
        name = info.run_dir.name
        if info.sweep_dir is not None and info.run_dir.is_relative_to(info.sweep_dir):
            name = f"{info.sweep_dir.name}/{info.run_dir.relative_to(info.sweep_dir)}"
        self.run = self.wandb.init(
            project=self.project or info.experiment or "facecls", entity=self.entity, mode=self.mode,
            dir=str(info.run_dir), name=name, group=group, id=run_id, resume="allow" if run_id else None,
            config=info.config, tags=self.tags + ([info.experiment] if info.experiment else []),
            notes=" ".join(f"{k}={v}" for k, v in info.overrides.items()) or None,
            reinit="create_new", settings=self.wandb.Settings(console="off", silent=True))
        id_file.write_text(f"{self.run.id}\n")

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.run.log({**metrics, "epoch": epoch}, step=epoch)

    def log_files(self, paths: list[Path]) -> None:
        if not self.save_files:
            return
        for path in paths:
            self.run.save(str(path), base_path=str(self.info.run_dir), policy="now")

    def log_final(self, metrics: dict) -> None:
        for key, value in numeric_items(metrics).items():
            self.run.summary[key] = value
        self.run.summary["stop_reason"] = str(metrics.get("stop_reason"))

    def finish(self, status: str) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            run.finish(exit_code=EXIT_CODES.get(status, 1))

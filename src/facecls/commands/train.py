"""`facecls train`: check the config, train one run into Hydra's run dir (facecls.training)."""
from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from facecls.config.task import reports_user_errors
from facecls.timing import CLOCK


@reports_user_errors(failure_value=0.0)  # a failed sweep trial scores 0, never NaN
def main(cfg: DictConfig) -> float:
    CLOCK.lap("compose")  # the overrides checked, the config composed, the run dir and its log set up
    from facecls.config.validate import validate_train_config
    from facecls.inference.device import select_device
    from facecls.training.distributed import session
    from facecls.training.run import run_training

    CLOCK.lap("imports")
    validate_train_config(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with session(cfg.trainer.get("strategy", "single"), select_device(cfg.trainer.device)) as dist:
        metrics = run_training(cfg, run_dir, dist)
    # The value a sweeper (Optuna) maximises: always a finite number (open-set runs: val_verif_acc).
    return float(metrics.get("best_val_verif_acc") or metrics.get("best_val_acc") or 0.0)

"""`facecls eval ckpt=PATH`: score a checkpoint on val and test, write eval.json."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from facecls.errors import reports_user_errors

log = logging.getLogger(__name__)


@reports_user_errors
def main(cfg: DictConfig) -> dict:
    from facecls.inspect.loading import load_run
    from facecls.io import atomic_write_json
    from facecls.training.engine import evaluate

    run = load_run(cfg.ckpt, cfg.trainer.device, cfg.data.root, cfg.paths.cache_dir)
    settings = run.eval_settings(cfg.trainer.eval_batch_size)
    scores = {"ckpt": str(Path(cfg.ckpt).expanduser().resolve()), "epoch": run.checkpoint.epoch,
              "data_root": str(run.data.root)}
    for split in ("val", "test"):
        result = evaluate(run.model, run.data.split(split), run.prepare, settings)
        scores.update({f"{split}_acc": result["acc"], f"{split}_loss": result["loss"],
                       f"{split}_size": len(run.data.split(split))})
    path = atomic_write_json(run.output_dir(cfg.out) / "eval.json", scores)
    log.info("val_acc %.4f val_loss %.4f | test_acc %.4f test_loss %.4f → %s", scores["val_acc"],
             scores["val_loss"], scores["test_acc"], scores["test_loss"], path)
    return scores

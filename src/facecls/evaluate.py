"""`facecls eval ckpt=PATH`: score a checkpoint on val and test, write eval.json."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from facecls.errors import reports_user_errors

log = logging.getLogger(__name__)


@reports_user_errors
def main(cfg: DictConfig) -> dict:
    from facecls.engine import LoopSettings, evaluate
    from facecls.io import atomic_write_json
    from facecls.loading import load_run
    from facecls.runtime import amp_flag

    run = load_run(cfg.ckpt, cfg.trainer.device, cfg.data.root, cfg.paths.cache_dir)
    trained = run.config.trainer
    settings = LoopSettings(device=run.device, max_epochs=1, batch_size=1,
                            eval_batch_size=cfg.trainer.eval_batch_size or trained.eval_batch_size,
                            amp=amp_flag(trained.get("amp", False), run.device))
    scores = {"ckpt": str(Path(cfg.ckpt).expanduser().resolve()), "epoch": run.checkpoint["epoch"],
              "data_root": str(run.data.root)}
    for split in ("val", "test"):
        result = evaluate(run.model, run.data.split(split), run.prepare, settings)
        scores.update({f"{split}_acc": result["acc"], f"{split}_loss": result["loss"],
                       f"{split}_size": len(run.data.split(split))})
    out = Path(cfg.out) if cfg.out else run.run_dir
    path = atomic_write_json(out / "eval.json", scores)
    log.info("val_acc %.4f val_loss %.4f | test_acc %.4f test_loss %.4f → %s", scores["val_acc"],
             scores["val_loss"], scores["test_acc"], scores["test_loss"], path)
    return scores

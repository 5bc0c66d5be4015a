"""`facecls lr-find [train overrides]`: the learning-rate range test on the run `facecls train`
would make with the same overrides; prints the suggested ``optim.lr=…`` (facecls.training.lr_find)."""
from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from facecls.config.task import reports_user_errors
from facecls.errors import UserError

log = logging.getLogger(__name__)


@reports_user_errors
def main(cfg: DictConfig) -> dict:
    from facecls.config.validate import validate_train_config
    from facecls.training.lr_find import range_test, write_range_test
    from facecls.training.run import build_run

    with open_dict(cfg):  # a throwaway run: no checkpoints, no resume, no trackers
        cfg.trainer.checkpoints = False
        cfg.resume = None
    validate_train_config(cfg)
    out = Path(HydraConfig.get().runtime.output_dir)
    run = build_run(cfg, out)
    try:
        f = cfg.lr_find
        result = range_test(run, float(f.start_lr), float(f.end_lr), int(f.num_steps), float(f.smooth),
                            float(f.diverge))
    finally:
        run.checkpoints.close()
    suggest = str(cfg.lr_find.get("suggest", "steepest"))
    if suggest not in ("steepest", "valley"):
        raise UserError(f"lr_find.suggest={suggest} — use steepest or valley.")
    summary = write_range_test(result, out, suggest)
    summary["out"] = str(out)
    if summary["suggested"] is None:
        print(f"lr-find: too few steps before the loss exploded ({result.stopped}) — lower lr_find.start_lr.")
        return summary
    print(f"lr-find: {summary['steps']} steps, {result.stopped} (plot: {out / 'lr_find.png'})")
    for name in ("steepest", "valley"):
        if summary[name] is not None:
            print(f"  {name:<9} optim.lr={summary[name]:.2e}")
    print(f"suggested: optim.lr={summary['suggested']:.2e}")
    return summary

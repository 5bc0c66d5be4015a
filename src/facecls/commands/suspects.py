"""`facecls suspects SWEEP_DIR`: likely mislabelled images of a k-fold sweep's folder, ranked
(suspects.csv), with a contact sheet (suspects.png); see facecls.sweeps.suspects."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from facecls.config.task import reports_user_errors
from facecls.errors import UserError


@reports_user_errors
def main(cfg: DictConfig) -> dict:
    from facecls.sweeps.suspects import write_suspects

    sweep = Path(str(cfg.sweep)).expanduser()
    if not sweep.is_dir():
        raise UserError(f"sweep={sweep} is not a folder — give a k-fold sweep dir: facecls suspects "
                        "outputs/multirun/<date>/<time>.")
    out = Path(cfg.out).expanduser() if cfg.out else sweep / "suspects"
    summary = write_suspects(sweep, out, cfg.trainer.device, cfg.trainer.eval_batch_size, int(cfg.count),
                             cfg.paths.cache_dir)
    print(f"{summary['suspects']} of {summary['images']} images look mislabelled ({summary['configuration']})")
    for line in (out / "suspects.csv").read_text().splitlines()[1:11]:
        print("  " + line)
    print(f"→ {out / 'suspects.csv'}, {out / 'suspects.png'}")
    return summary

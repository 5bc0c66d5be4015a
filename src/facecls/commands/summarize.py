"""`facecls summarize DIR [DIR…]`: compare every run under the given run or sweep dirs:
summary.csv, summary_groups.csv, summary.md and the figures, and the table printed."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from facecls.config.task import reports_user_errors


@reports_user_errors
def main(cfg: DictConfig) -> None:
    from facecls.sweeps.summary import write_summary

    dirs = cfg.dirs if OmegaConf.is_list(cfg.dirs) else [cfg.dirs] if cfg.dirs else []  # dirs=A works too
    dirs = [str(d) for d in dirs]
    out = cfg.out if cfg.out is not None else (dirs[0] if dirs else None)
    _, text = write_summary(dirs, out, [str(k) for k in cfg.average_over or []], cfg.sort, cfg.plots,
                            stale_after_min=cfg.stale_after_min, compare=cfg.get("compare", "best"),
                            compare_metric=cfg.get("compare_metric", "test_acc"))
    print(text)
    written = "summary.csv, summary_groups.csv, summary.md" + (", summary.png, curves_overlay.png" if cfg.plots else "")
    print(f"\nWrote {written} to {out}")

"""`facecls robustness ckpt=PATH`: accuracy of a trained model on changed val/test images
(report section 1.7); writes robustness.csv, robustness_per_class.csv and robustness.png."""
from __future__ import annotations

import logging

from omegaconf import DictConfig

from facecls.config.task import reports_user_errors
from facecls.errors import UserError

log = logging.getLogger(__name__)


@reports_user_errors
def main(cfg: DictConfig) -> list[dict]:
    import dataclasses

    from facecls.inference.loading import load_run
    from facecls.inference.tta import describe, tta_names, with_tta
    from facecls.inspect.robustness import (
        check_splits,
        format_rows,
        per_class_csv,
        plot_robustness,
        robustness_rows,
        rows_csv,
        variation_settings,
    )
    from facecls.inspect.tensorboard import figures_to_tensorboard
    from facecls.io import atomic_write_text

    splits = check_splits(cfg.splits)
    variations = cfg.get("variation")
    if not variations:
        raise UserError("no variation chosen — pick some, e.g. variation=[rotation,gaussian_blur].")
    variation_settings(variations)  # a broken variation fails here, before the data is loaded
    run = load_run(cfg.ckpt, cfg.trainer.device, cfg.data.root, cfg.paths.cache_dir)
    if tta_names(cfg.eval.tta):  # every row (clean and changed) scored as the softmax averaged over the views
        run = dataclasses.replace(run, model=with_tta(run.model, cfg.eval.tta))
        log.info("test-time augmentation: %s", describe(cfg.eval.tta))
    out = run.output_dir(cfg.out)  # checked before the work
    rows = robustness_rows(run, variations, splits, run.eval_settings(cfg.trainer.eval_batch_size), int(cfg.seed))
    table = atomic_write_text(out / "robustness.csv", rows_csv(rows))
    per_class = atomic_write_text(out / "robustness_per_class.csv", per_class_csv(rows))
    with figures_to_tensorboard(run, out, "robustness"):  # a run with <run>/tb gets the figure too
        png = plot_robustness(rows, splits, out / "robustness.png")
    for line in format_rows(rows):
        log.info("%s", line)
    log.info("→ %s, %s, %s", table, per_class, png)
    return rows

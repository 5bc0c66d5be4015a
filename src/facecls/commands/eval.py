"""`facecls eval ckpt=PATH`: score a checkpoint on val and test, write eval.json (accuracy, loss,
macro/weighted-F1, balanced accuracy, top-5, ECE, NLL per split) and, for the test split,
eval_per_class.csv and eval_reliability.png/.csv (prefixed: the run dir already holds
training's per_class.csv, which a later eval of last.pt must not overwrite). ``calibrate=true``
fits a temperature on val and reports the test ECE/NLL before and after it. A run trained with
logger=tensorboard also gets the reliability figure in its event files."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from facecls.config.task import reports_user_errors

log = logging.getLogger(__name__)


def calibrate(scored: dict, data, num_classes: int) -> dict:
    """Temperature scaling fitted on val, judged on test: ECE and NLL before and after."""
    from facecls.inference.metrics import fit_temperature, summary_metrics, with_temperature

    temperature = fit_temperature(scored["val"]["probabilities"], data.val.labels)
    after = summary_metrics(with_temperature(scored["test"]["probabilities"], temperature), data.test.labels,
                            num_classes)
    log.info("temperature %.3f (fitted on val): test ECE %.4f → %.4f, NLL %.4f → %.4f", temperature,
             scored["test"]["ece"], after["ece"], scored["test"]["nll"], after["nll"])
    return {"temperature": temperature, "fitted_on": "val", "test_ece_before": scored["test"]["ece"],
            "test_ece_after": after["ece"], "test_nll_before": scored["test"]["nll"], "test_nll_after": after["nll"]}


def score_with_tta(run, settings, tta, plain: dict) -> dict:
    """val and test scored again as the softmax averaged over the TTA views; eval.json's
    ``tta`` block, with the accuracy gain over the plain score per split."""
    from facecls.inference.scoring import metric_entries, score_split
    from facecls.inference.tta import describe, with_tta

    net = with_tta(run.model, tta)
    block = {"views": describe(tta)}
    for split in ("val", "test"):
        result = score_split(net, run.data.split(split), run.prepare, settings, len(run.classes))
        block.update({f"{split}_acc": result["acc"], f"{split}_loss": result["loss"],
                      f"{split}_acc_gain": result["acc"] - plain[f"{split}_acc"], **metric_entries(result, split)})
    log.info("TTA %s: val_acc %.4f (%+.4f) test_acc %.4f (%+.4f)", block["views"], block["val_acc"],
             block["val_acc_gain"], block["test_acc"], block["test_acc_gain"])
    return block


@reports_user_errors
def main(cfg: DictConfig) -> dict:
    from facecls.inference.confusion import write_most_confused
    from facecls.inference.loading import load_run
    from facecls.inference.scoring import metric_entries, score_split, write_score_files
    from facecls.inference.tta import tta_names
    from facecls.inspect.tensorboard import figures_to_tensorboard
    from facecls.io import atomic_write_json

    run = load_run(cfg.ckpt, cfg.trainer.device, cfg.data.root, cfg.paths.cache_dir)
    settings = run.eval_settings(cfg.trainer.eval_batch_size)
    out = run.output_dir(cfg.out)
    scores = {"ckpt": str(Path(cfg.ckpt).expanduser().resolve()), "epoch": run.checkpoint.epoch,
              "data_root": str(run.data.root), "classes": list(run.classes)}
    scored = {}
    for split in ("val", "test"):
        data = run.data.split(split)
        result = scored[split] = score_split(run.model, data, run.prepare, settings, len(run.classes))
        scores.update({f"{split}_acc": result["acc"], f"{split}_loss": result["loss"],
                       f"{split}_size": len(data), **metric_entries(result, split)})
        if split == "test":
            with figures_to_tensorboard(run, out, "eval"):  # a run with <run>/tb gets the reliability figure
                write_score_files(out, result, data.labels, run.classes, prefix="eval_", title="Test split ")
    if cfg.get("calibrate"):
        scores["calibration"] = calibrate(scored, run.data, len(run.classes))
    if tta_names(cfg.eval.tta):
        scores["tta"] = score_with_tta(run, settings, cfg.eval.tta, scores)
    write_most_confused(out / "eval_most_confused.csv", run.data.split("test").labels,
                        scored["test"]["predictions"], run.classes)
    path = atomic_write_json(out / "eval.json", scores)
    log.info("val_acc %.4f val_loss %.4f | test_acc %.4f test_loss %.4f macro-F1 %.4f ECE %.4f → %s",
             scores["val_acc"], scores["val_loss"], scores["test_acc"], scores["test_loss"],
             scores["test_macro_f1"], scores["test_ece"], path)
    return scores

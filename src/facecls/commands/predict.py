"""`facecls predict ckpt=PATH|model=FILE input=FILE_OR_DIR`: classify new images with a trained model —
predictions.csv (top-k names and probabilities), skipped.csv, predict.json and a contact sheet."""
from __future__ import annotations

from omegaconf import DictConfig

from facecls.config.task import reports_user_errors


@reports_user_errors
def main(cfg: DictConfig) -> dict:
    from facecls.inspect.predict import run_predict

    summary = run_predict(cfg)
    accuracy = f", accuracy {summary['accuracy']:.4f}" if summary["accuracy"] is not None else ""
    print(f"{summary['images']} image(s) classified ({summary['unknown']} unknown), "
          f"{len(summary['skipped'])} skipped{accuracy} → {summary['out']}/predictions.csv")
    return summary

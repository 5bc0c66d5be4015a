"""`facecls export ckpt=PATH format=onnx|torchscript [out=FILE]`: the model with its normalisation
and metadata in one file, checked against the checkpoint (parity) before it is kept."""
from __future__ import annotations

from omegaconf import DictConfig

from facecls.config.task import reports_user_errors


@reports_user_errors
def main(cfg: DictConfig) -> dict:
    from facecls.export.run import run_export

    summary = run_export(cfg)
    parity = summary["parity"]
    print(f"{summary['format']} → {summary['file']} (parity on {parity['images']} {parity['inputs']} images: "
          f"max |Δ logit| {parity['max_abs_diff']:.3g}, argmax agreement {parity['argmax_agreement']:.4f})")
    return summary

"""`facecls visualize <kind> ckpt=PATH`: look inside a trained model.

Kinds (one module of facecls.inspect each): ``weights`` (first-layer weights as images),
``predictions`` (a gallery of correct and false predictions) and ``attribution`` (guided
backprop, Grad-CAM, integrated gradients). Figures and their numbers go into the run dir
or ``out=DIR``; a run trained with logger=tensorboard also gets them in its event files.
"""
from __future__ import annotations

import importlib

from omegaconf import DictConfig, OmegaConf

from facecls.config.task import reports_user_errors
from facecls.errors import UserError

# kind → (module, function(cfg, run, out))
KINDS = {
    "weights": ("facecls.inspect.weights", "run_weights"),
    "predictions": ("facecls.inspect.predictions", "run_predictions"),
    "attribution": ("facecls.inspect.attribution", "run_attribution"),
}


@reports_user_errors
def main(cfg: DictConfig):
    kind = OmegaConf.select(cfg, "kind", throw_on_missing=False)
    if kind not in KINDS:
        what = f"'{kind}' is not a kind of picture" if kind else "say what to draw"
        raise UserError(f"{what} — use: facecls visualize {'|'.join(KINDS)} ckpt=PATH.")
    from facecls.inference.loading import load_run
    from facecls.inspect.tensorboard import figures_to_tensorboard

    # first-layer weights mean the same in an embedding model; predictions and attribution read class scores
    run = load_run(cfg.ckpt, cfg.trainer.device, cfg.data.root, cfg.paths.cache_dir, allow_embedding=kind == "weights")
    module, function = KINDS[kind]
    out = run.output_dir(cfg.out)
    with figures_to_tensorboard(run, out, f"visualize_{kind}"):  # a run with <run>/tb gets the figures too
        return getattr(importlib.import_module(module), function)(cfg, run, out)

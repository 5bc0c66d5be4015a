"""`facecls rf model=… [input_size=…]` or `facecls rf ckpt=PATH`: print the receptive field
of every conv/pool layer, write rf.csv."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from facecls.config.task import reports_user_errors
from facecls.errors import UserError

log = logging.getLogger(__name__)


@reports_user_errors
def main(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from facecls.inference.checkpoint import load_checkpoint
    from facecls.inference.loading import run_dir_of
    from facecls.inspect.receptive_field import fmt, format_table, receptive_fields, table_csv
    from facecls.io import atomic_write_text
    from facecls.models import build_model, preprocess_for
    from facecls.models.pretrained import skip_pretrained

    model_cfg, num_classes, out = cfg.model, cfg.num_classes, cfg.out
    if cfg.ckpt:
        ckpt = load_checkpoint(cfg.ckpt)
        model_cfg = OmegaConf.create(ckpt.config["model"])
        num_classes = len(ckpt.classes)
        out = out or run_dir_of(Path(cfg.ckpt))
    model_cfg = skip_pretrained(model_cfg)  # the field needs the architecture only, no weights
    if cfg.input_size and "input_size" in model_cfg:
        model_cfg.input_size = cfg.input_size  # a model sized for the input (its FC layers follow it)
    size = cfg.input_size or preprocess_for(model_cfg).size
    if not isinstance(size, int) or size < 1:
        raise UserError(f"input_size={size} is invalid — give a whole number of pixels, e.g. input_size=224.")
    model = build_model(model_cfg, num_classes=int(num_classes))
    try:
        table = receptive_fields(model, size)
    except RuntimeError as err:  # the model cannot take this input (too small for its kernels)
        raise UserError(f"a {size}×{size} image does not fit through {model_cfg._target_} "
                        f"({str(err).splitlines()[0][:120]}) — use a larger input_size.") from None
    name = model_cfg._target_.rsplit(".", 1)[-1]
    if out is None:
        choice = HydraConfig.get().runtime.choices.get("model", name) if HydraConfig.initialized() else name
        out = Path(cfg.paths.output_dir) / "rf" / str(choice)
    path = atomic_write_text(Path(out) / "rf.csv", table_csv(table))
    if table.rows:
        log.info("Receptive fields of %s at %d×%d input:\n%s", name, size, size, format_table(table))
    for note in table.notes:
        log.info("note: %s", note)
    if table.rows:
        last = table.rows[-1]
        log.info("%s (%s) sees a %d×%d patch of the input, one unit every %s pixels → %s", last.label,
                 last.layer, last.rf[0], last.rf[1], fmt(last.jump), path)
    else:
        log.info("→ %s", path)
    return table

"""`facecls export ckpt=… format=onnx|torchscript`: write the file, reopen it the way predict and
serve will (facecls.inference.runners), check it against the checkpoint's PyTorch model and keep
it only when they agree (export.json beside it records the figures)."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from facecls.errors import UserError
from facecls.export.formats import FORMATS
from facecls.export.parity import check_parity, parity_images
from facecls.inference.loading import run_dir_of
from facecls.inference.runners import checkpoint_runner, open_runner
from facecls.io import atomic_write_json

log = logging.getLogger(__name__)


def output_path(cfg, file_name: str) -> Path:
    """``out=FILE`` (a folder: FILE inside it), else <run dir>/export/<file_name>."""
    if not cfg.out:
        return run_dir_of(Path(cfg.ckpt)) / "export" / file_name
    out = Path(cfg.out).expanduser()
    return out / file_name if out.is_dir() or str(cfg.out).endswith("/") else out


def run_export(cfg) -> dict:
    """Export ``cfg.ckpt`` as ``cfg.format`` and check parity; returns what export.json holds."""
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format} is unknown — use one of: {', '.join(FORMATS)}.")
    if cfg.parity.split not in ("train", "val", "test"):
        raise UserError(f"parity.split={cfg.parity.split} is unknown — use val, test or train.")
    writer, file_name = FORMATS[cfg.format]
    # an embedding model carries the threshold facecls verify chose (verify.json of the run) for `far`
    reference = checkpoint_runner(Path(cfg.ckpt).expanduser(), "cpu", far=cfg.get("far"))
    path = output_path(cfg, file_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = OmegaConf.to_container(cfg[cfg.format], resolve=True) if cfg.get(cfg.format) else {}
    writer(reference.module, reference.info, path, **options)
    exported = open_runner(path, "cpu")
    images, inputs = parity_images(Path(cfg.ckpt).expanduser(), cfg.parity.split, int(cfg.parity.max_images),
                                   reference.info.input_size, cfg.get("cache_dir"))
    parity = check_parity(reference, exported, images, inputs, float(cfg.parity.tolerance))
    log.info(parity.line())
    summary = {"file": str(path), "format": cfg.format, "engine": exported.kind,
               "ckpt": str(Path(cfg.ckpt).expanduser().resolve()), "parity": parity.to_dict(),
               "metadata": exported.info.to_dict()}
    if not parity.ok:
        path.unlink()
        raise UserError(f"the exported model disagrees with the checkpoint — {parity.line()}; the file was "
                        "not kept. Please report it with the model config.")
    atomic_write_json(path.with_name(path.name + ".export.json"), summary)
    return summary

"""`facecls make-data synthetic out=DIR`: write a dataset to disk as image files."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from facecls.config.task import reports_user_errors
from facecls.errors import UserError

log = logging.getLogger(__name__)


@reports_user_errors
def main(cfg: DictConfig) -> None:
    if cfg.kind not in ("synthetic", "crops"):
        raise UserError(f"unknown dataset kind '{cfg.kind}' — use: facecls make-data synthetic out=DIR, or "
                        "facecls make-data crops data.root=PHOTOS out=DIR.")
    out = Path(cfg.out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise UserError(f"'{out}' already exists and is not empty — choose a new out=DIR or remove it.")
    if cfg.kind == "crops":
        return write_face_crops(cfg, out)
    from facecls.data.synthetic import write_dataset

    try:
        write_dataset(out, num_classes=cfg.num_classes, images_per_class=cfg.images_per_class,
                      image_size=cfg.image_size, seed=cfg.seed)
    except ValueError as err:
        raise UserError(str(err)) from None
    except PermissionError:
        raise UserError(f"cannot write to '{out}' (permission denied) — choose a writable out=DIR.") from None
    n = sum(1 for _ in out.rglob("*.jpg"))
    log.info("Wrote %d synthetic face images (%d classes) to %s — train on them with: "
             "facecls train data=imagefolder data.root=%s", n, cfg.num_classes, out, out)


def write_face_crops(cfg: DictConfig, out: Path) -> None:
    from facecls.data.crop_folder import write_crops
    from facecls.data.faces import FaceCrop

    if not cfg.data.root:
        raise UserError("make-data crops needs the photos — give data.root=/path/to/photos (one folder per class).")
    settings = FaceCrop(mode="detect", margin=cfg.data.faces.margin, on_miss="skip",
                        min_neighbors=cfg.data.faces.min_neighbors)
    written, missed = write_crops(Path(cfg.data.root).expanduser(), out, settings)
    log.info("Wrote %d face crops to %s (boxes in %s)%s — train on them with: facecls train data=imagefolder "
             "data.root=%s", written, out, out / "boxes.csv",
             f"; {len(missed)} photo(s) without a face found: {', '.join(missed[:5])}" if missed else "", out)

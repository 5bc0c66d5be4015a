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
    from facecls.io import check_writable_dir

    # about what the JPEGs take (≈ 0.4 byte per pixel and channel at quality 95), checked before any is drawn
    need = int(cfg.num_classes * cfg.images_per_class * cfg.image_size ** 2 * 3 * 0.4) if cfg.kind == "synthetic" else 0
    check_writable_dir(out, need_bytes=need, what="dataset", fix="choose another out=DIR")
    if cfg.kind == "crops":
        return write_face_crops(cfg, out)
    from facecls.data.synthetic import write_dataset

    try:
        write_dataset(out, num_classes=cfg.num_classes, images_per_class=cfg.images_per_class,
                      image_size=cfg.image_size, seed=cfg.seed, layout=cfg.layout)
    except ValueError as err:
        raise UserError(str(err)) from None
    except OSError as err:  # permission, or a disk that filled up while writing
        raise UserError(f"cannot write to '{out}' ({(err.strerror or str(err)).lower()}) — choose a writable "
                        "out=DIR with room.") from None
    n = sum(1 for _ in out.rglob("*.jpg"))
    log.info("Wrote %d synthetic face images (%d classes) to %s — train on them with: "
             "facecls train data=imagefolder data.root=%s", n, cfg.num_classes, out, out)
    if cfg.layout == "lfw":
        write_pairs_file(cfg, out)


def write_pairs_file(cfg: DictConfig, out: Path) -> None:
    """`layout=lfw`: a pairs.txt over the people a data.split.by=identity run holds out (or all)."""
    from facecls.faces.heldout import write_heldout_pairs

    p = cfg.pairs
    path, people, per_fold = write_heldout_pairs(out, p.people, cfg.split, int(p.folds), p.per_fold, int(p.seed))
    log.info("Wrote %s: %d folds x (%d same + %d different) pairs over %d %speople — score a model on them with: "
             "facecls verify ckpt=RUN/checkpoints/best.pt pairs=%s data.root=%s", path, p.folds, per_fold, per_fold,
             people, "held-out " if p.people == "test" else "", path, out)


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

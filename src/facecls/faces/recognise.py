"""`facecls enroll` and `facecls identify`: the gallery (facecls.faces.gallery) driven by a config.

enroll: one sub-folder per person → a gallery file (embeddings and file names only, 0600).
identify: each photo of ``input`` against the gallery → identify.csv, identify.json and a
contact sheet; the decision is the best person when their similarity is above the threshold
(``threshold=``, or the gallery's threshold for ``far=``), else ``unknown``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from facecls.errors import UserError
from facecls.faces.embedder import load_embedder
from facecls.faces.gallery import (
    UNKNOWN,
    check_gallery_model,
    choose_threshold,
    enroll,
    identify_rows,
    open_set_rates,
    read_gallery,
    write_gallery,
)
from facecls.inspect.predict import contact_sheet, list_inputs
from facecls.io import atomic_write_json, atomic_write_text, check_writable_dir, csv_text

log = logging.getLogger(__name__)


def _verify_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        log.warning("Could not read %s (%s): its thresholds are not used.", path, err)
        return None


def run_enroll(cfg: DictConfig) -> dict:
    """Enrol ``cfg.gallery`` (one folder per person) with ``cfg.ckpt`` into ``cfg.out``."""
    out = Path(str(cfg.out)).expanduser()
    check_writable_dir(out.parent, what="gallery file", fix="pass out=FILE in a writable folder")
    if out.is_dir():
        raise UserError(f"out={out} is a folder — give the gallery FILE to write, e.g. out={out / 'gallery.pt'}.")
    embedder = load_embedder(cfg.ckpt, cfg.trainer.device, cfg.trainer.eval_batch_size)
    previous = read_gallery(out) if out.exists() else None
    verify_path = Path(str(cfg.verify_json)).expanduser() if cfg.verify_json else embedder.run_dir / "verify.json"
    gallery, summary = enroll(embedder, Path(str(cfg.gallery)).expanduser(), previous,
                              [float(f) for f in cfg.fars], _verify_json(verify_path), flip=bool(cfg.flip))
    write_gallery(out, gallery)
    thresholds = gallery["thresholds"]
    log.info("Thresholds by FAR — from verify.json: %s; from %d impostor comparisons among the enrolled people: %s",
             thresholds["verify"] or "none", thresholds["impostor_comparisons"], thresholds["enrolled"] or "none")
    return {**summary, "out": str(out), "fingerprint": embedder.fingerprint}


def run_identify(cfg: DictConfig) -> dict:
    """Identify every photo of ``cfg.input`` against the gallery ``cfg.gallery``."""
    gallery_path = Path(str(cfg.gallery)).expanduser()
    gallery = read_gallery(gallery_path)
    threshold, rule = choose_threshold(gallery, cfg.far, cfg.threshold)
    ckpt = cfg.ckpt or gallery["model"]["ckpt"]
    out = check_writable_dir(Path(str(cfg.out)).expanduser() if cfg.out else gallery_path.parent / "identify",
                             need_bytes=2**20, what="identification results", fix="pass out=DIR on a writable disk")
    embedder = load_embedder(ckpt, cfg.trainer.device, cfg.trainer.eval_batch_size)
    check_gallery_model(gallery, gallery_path, embedder.fingerprint, str(ckpt))
    root, files = list_inputs(cfg.input)
    embedded, _ = embedder.embed_files(root, files, flip=bool(gallery.get("flip")), cache_dir=None,
                                       keep_pixels=int(cfg.count))
    if embedded.skipped:
        shown = "; ".join(f"{f} ({why})" for f, why in list(embedded.skipped.items())[:10])
        log.warning("Skipped %d unreadable file(s): %s", len(embedded.skipped), shown)
    rows = identify_rows(embedded.embeddings, gallery, threshold) if embedded.files else []
    header = ["file", "person", "similarity", "runner_up", "runner_up_similarity", "decision"]
    table = [[f, r["person"], f"{r['similarity']:.6f}", r["runner_up"],
              "" if r["runner_up_similarity"] is None else f"{r['runner_up_similarity']:.6f}", r["decision"]]
             for f, r in zip(embedded.files, rows)]
    atomic_write_text(out / "identify.csv", csv_text(header, table))
    rates = open_set_rates(embedded.files, rows, set(gallery["people"]))
    summary = {"gallery": str(gallery_path), "ckpt": str(embedder.source), "input": str(root),
               "threshold": threshold, "threshold_rule": rule, "far": None if cfg.threshold is not None else cfg.far,
               "images": len(rows), "unknown": sum(r["decision"] == UNKNOWN for r in rows),
               "skipped": sorted(embedded.skipped), "rates": rates}
    atomic_write_json(out / "identify.json", summary)
    if embedded.pixels:
        contact_sheet(embedded.pixels, embedded.files, [r["decision"] for r in rows],
                      [r["similarity"] for r in rows], out / "contact_sheet.png")
    return {**summary, "out": str(out)}

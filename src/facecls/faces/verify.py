"""`facecls verify`: the face-verification protocol on a checkpoint (LFW View 2 style).

Every image a pairs file names is decoded (through the decode cache, cropped as in training)
and embedded exactly once, in batches; a pair's score is the cosine similarity of its two
embeddings (a dot product: embeddings are L2-normalised). The scores go through
:func:`facecls.faces.verification.verification_report` — each fold's threshold fitted on the
other folds — and land in ``verify.json`` with ``roc.png``, ``similarities.png`` and
``pair_scores.csv`` (each pair's score, kind and fold: ROC overlays and re-analysis need no model).

``pairs=auto`` draws balanced, identity-disjoint folds from the run's *test* people and writes
them (``pairs.txt`` when the files are named as LFW names them, else ``pairs.csv``) so the same
pairs can score another model; ``pairs=FILE`` reads an LFW pairs file against ``data.root``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from facecls.data.dataset import load_image_list
from facecls.data.lfw import FOLDERS
from facecls.errors import UserError
from facecls.faces.embedder import Embedder, load_embedder
from facecls.faces.figures import roc_figure, similarity_histogram
from facecls.faces.heldout import draw_fitting
from facecls.faces.pairs import Pair, read_pairs, write_pairs
from facecls.faces.verification import roc, verification_report
from facecls.faces.view1 import fitted_threshold, one_fold_report
from facecls.inference.loading import load_run
from facecls.io import atomic_write_json, atomic_write_text, check_writable_dir, csv_text

log = logging.getLogger(__name__)


@dataclass
class PairScores:
    """One score per pair (plain embeddings, and mirror-fused ones when ``verify.flip``)."""

    pairs: list[Pair]
    plain: torch.Tensor
    fused: torch.Tensor | None
    images: int
    embed_seconds: float
    source: str      # where the pairs came from (a file, or 'auto: …')
    digest: str      # the pairs themselves (files relative to the image root, kind, fold): equal = same pairs


def pairs_digest(pairs: list[Pair], root: Path) -> str:
    """SHA-256 (16 hex digits) of the pairs: runs verified on equal digests can be paired fold by fold."""
    digest = hashlib.sha256()
    for p in pairs:
        digest.update(f"{os.path.relpath(p.path_a, root)}\t{os.path.relpath(p.path_b, root)}\t{int(p.same)}\t"
                      f"{p.fold}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def lfw_folder(root: Path) -> Path:
    """``root`` itself, or the LFW image folder inside it when LFW was placed there as ``data=lfw``
    expects (``<root>/lfw-py/lfw_funneled/…``)."""
    for name in (FOLDERS["funneled"], FOLDERS["original"], FOLDERS["deepfunneled"]):
        if (root / "lfw-py" / name).is_dir():
            return root / "lfw-py" / name
    return root


def pairs_root(cfg: DictConfig, embedder: Embedder) -> Path:
    """The image tree a pairs file is read against: ``data=…`` / ``data.root=DIR`` when given, else
    the data the checkpoint was trained on."""
    data = cfg.get("data") or {}
    if data.get("source") is not None:   # a data group chosen on the command line (data=lfw, …)
        return load_image_list(data).root
    if data.get("root"):
        root = Path(str(data.root)).expanduser()
        if not root.is_dir():
            raise UserError(f"data.root={root} does not exist — give the folder of <person>/<person>_NNNN.jpg images.")
        return lfw_folder(root)
    if embedder.runner is not None:
        raise UserError(f"{embedder.source.name} is an exported model: it does not know its training data — give "
                        "the pairs' image folder with data.root=DIR (or data=lfw).")
    return load_image_list(embedder.config.data).root


def score_pairs(embedder: Embedder, pairs: list[Pair], root: Path, flip: bool, cache_dir: Path | None,
                source: str) -> PairScores:
    """Embed every image of ``pairs`` once and score each pair."""
    unique = sorted({str(p) for pair in pairs for p in (pair.path_a, pair.path_b)})
    relative = [os.path.relpath(p, root) for p in unique]
    started = time.perf_counter()
    plain, fused = embedder.embed_files(root, relative, cache_dir=cache_dir, both=flip)
    seconds = time.perf_counter() - started
    if plain.skipped:
        first, why = next(iter(plain.skipped.items()))
        raise UserError(f"{len(plain.skipped)} image(s) named by the pairs could not be read, e.g. {root / first} "
                        f"({why}) — fix or replace them.")
    index = {path: i for i, path in enumerate(unique)}
    a = torch.tensor([index[str(p.path_a)] for p in pairs])
    b = torch.tensor([index[str(p.path_b)] for p in pairs])

    def scores(e: torch.Tensor) -> torch.Tensor:
        return (e[a] * e[b]).sum(1)

    return PairScores(pairs, scores(plain.embeddings), scores(fused.embeddings) if fused else None, len(unique),
                      seconds, source, pairs_digest(pairs, root))


def auto_pairs(cfg: DictConfig, embedder: Embedder, out: Path) -> PairScores:
    """Draw folds from the run's test people, write them beside verify.json, score them."""
    v = cfg.verify
    if embedder.runner is not None:
        raise UserError("pairs=auto draws from the run's test people, which only its checkpoint knows — give "
                        "ckpt=<run>/checkpoints/best.pt, or pairs=FILE data.root=DIR with the exported model.")
    for key, least in (("folds", 2), ("pairs_per_fold", 1)):
        value = v[key]
        if (isinstance(value, bool) or not isinstance(value, int) or value < least) and \
                not (key == "pairs_per_fold" and value == "auto"):
            also = " or auto (the most that fit, up to 300)" if key == "pairs_per_fold" else ""
            raise UserError(f"verify.{key}={value} is invalid — give a whole number >= {least}{also} "
                            "(LFW: 10 folds of 300).")
    run = load_run(cfg.ckpt, cfg.trainer.device, (cfg.get("data") or {}).get("root"), cfg.paths.cache_dir,
                   allow_embedding=True)
    if OmegaConf.select(run.config, "data.split.by", default="image") != "identity":
        log.warning("This run split by image (data.split.by=image): its test people were seen in training, so "
                    "this measures closed-set verification — train with data.split.by=identity for unseen people.")
    test = run.data.test
    root = Path(run.data.root)
    by_person: dict[str, list[str]] = {}
    for file, label in zip(test.files, test.labels.tolist()):  # (split by identity: test labels are no class)
        by_person.setdefault(str(label), []).append(str(root / file))
    # auto: the most pairs per fold (<= 300, as LFW) that these people allow; a number: exactly that many
    pairs, per_fold = draw_fitting(by_person, int(v.folds), v.pairs_per_fold, int(v.seed))
    written = write_auto_pairs(out, pairs, int(v.folds), per_fold, root)
    row = {str(root / f): i for i, f in enumerate(test.files)}
    used = sorted({row[str(p)] for pair in pairs for p in (pair.path_a, pair.path_b)})
    started = time.perf_counter()
    images = test.inputs[torch.tensor(used)]
    plain = embedder.embed_pixels(images)
    fused = embedder.embed_pixels(images, flip=True) if v.flip else None
    seconds = time.perf_counter() - started
    position = {u: i for i, u in enumerate(used)}
    a = torch.tensor([position[row[str(p.path_a)]] for p in pairs])
    b = torch.tensor([position[row[str(p.path_b)]] for p in pairs])
    source = (f"auto: {len(by_person)} test people of the run, {int(v.folds)} folds x {per_fold} same "
              f"+ {per_fold} different pairs, seed {int(v.seed)} (written to {written.name})")
    return PairScores(pairs, (plain[a] * plain[b]).sum(1), None if fused is None else (fused[a] * fused[b]).sum(1),
                      len(used), seconds, source, pairs_digest(pairs, root))


def write_auto_pairs(out: Path, pairs: list[Pair], folds: int, per_fold: int, root: Path) -> Path:
    """``pairs.txt`` (LFW's format) when every file is named ``<person>/<person>_NNNN.ext``, else
    ``pairs.csv`` (file_a, file_b relative to the data root, same, fold)."""
    try:
        return write_pairs(out / "pairs.txt", pairs, folds, per_fold)
    except UserError as err:
        log.info("Pairs written as pairs.csv, not pairs.txt: %s", err)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file_a", "file_b", "same", "fold"])
    writer.writerows([os.path.relpath(p.path_a, root), os.path.relpath(p.path_b, root), int(p.same), p.fold + 1]
                     for p in pairs)
    return atomic_write_text(out / "pairs.csv", buffer.getvalue())


def _report(scored: PairScores, scores: torch.Tensor, cfg: DictConfig, fit: PairScores | None = None,
            fit_scores: torch.Tensor | None = None) -> dict:
    v = cfg.verify
    same = [p.same for p in scored.pairs]
    folds = [p.fold for p in scored.pairs]
    if len(set(folds)) == 1:  # View 1 (pairsDevTest.txt): the threshold comes from another file, if any
        fitted = fitted_threshold(fit_scores, [p.same for p in fit.pairs], fit.source) if fit else None
        return one_fold_report(scores, same, fars=[float(f) for f in v.fars], fitted=fitted)
    return verification_report(scores, same, folds, fars=[float(f) for f in v.fars],
                               far=None if v.far is None else float(v.far))


def run_verify(cfg: DictConfig) -> dict:
    """Score the pairs ``cfg.pairs`` (auto | FILE) with ``cfg.ckpt``; write verify.json, roc.png,
    similarities.png (and the drawn pairs) into ``cfg.out`` (default: the run dir)."""
    v = cfg.verify
    embedder = load_embedder(cfg.ckpt, cfg.trainer.device, cfg.trainer.eval_batch_size)
    out = check_writable_dir(Path(cfg.out).expanduser() if cfg.out else embedder.run_dir, need_bytes=2**20,
                             what="verification results", fix="pass out=DIR on a writable disk")
    started = time.perf_counter()
    fit = None
    if str(cfg.pairs) == "auto":
        scored = auto_pairs(cfg, embedder, out)
    else:
        root = pairs_root(cfg, embedder)
        pairs = read_pairs(Path(str(cfg.pairs)).expanduser(), root)
        cache = Path(cfg.paths.cache_dir) if cfg.paths.get("cache_dir") else None
        scored = score_pairs(embedder, pairs, root, bool(v.flip), cache, str(Path(str(cfg.pairs)).expanduser()))
        if v.get("threshold_pairs"):
            fit_file = Path(str(v.threshold_pairs)).expanduser()
            fit = score_pairs(embedder, read_pairs(fit_file, root), root, bool(v.flip), cache, str(fit_file))
    plain = _report(scored, scored.plain, cfg, fit, fit.plain if fit else None)
    result = _report(scored, scored.fused, cfg, fit, fit.fused if fit else None) if scored.fused is not None \
        else plain
    total = time.perf_counter() - started
    summary = {"ckpt": str(embedder.source), "model_fingerprint": embedder.fingerprint, "embedding": embedder.kind,
               "embedding_dim": embedder.dim, "pairs": scored.source, "pairs_digest": scored.digest,
               "images": scored.images,
               **result, "flip": flip_gain(plain, result) if scored.fused is not None else {"used": False},
               "seconds": {"embed": round(scored.embed_seconds, 3), "total": round(total, 3)}}
    scores = scored.fused if scored.fused is not None else scored.plain
    curve = roc(scores, [p.same for p in scored.pairs])
    label = f"{embedder.loss_name} (AUC {result['roc_auc']:.3f})"
    roc_figure(curve.far, curve.tar, out / "roc.png", label=label, title="ROC of the verification pairs")
    similarity_histogram(scores, [p.same for p in scored.pairs], result["threshold"], out / "similarities.png")
    atomic_write_text(out / "pair_scores.csv", csv_text(["score", "same", "fold"], (
        (f"{score:.6f}", int(p.same), p.fold + 1) for score, p in zip(scores.tolist(), scored.pairs))))
    atomic_write_json(out / "verify.json", summary)
    summary["out"] = str(out)
    return summary


def flip_gain(plain: dict, fused: dict) -> dict:
    """What fusing each image with its mirror image changed (verify.flip=true)."""
    keys = ("accuracy_mean", "accuracy_stderr", "roc_auc", "eer")
    gain = None if plain["accuracy_mean"] is None else fused["accuracy_mean"] - plain["accuracy_mean"]
    return {"used": True, "without": {k: plain[k] for k in keys}, "with": {k: fused[k] for k in keys},
            "accuracy_gain": gain, "roc_auc_gain": fused["roc_auc"] - plain["roc_auc"],
            "note": "the top-level numbers are with flip; 'without' is the same pairs and model without it"}

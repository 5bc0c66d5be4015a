"""`facecls predict`: score new images with a trained checkpoint.

The input is one file, a folder or a folder tree. Every file is decoded exactly as training
decoded its data (the checkpoint's own preprocessing, facecls.data.decode), in chunks so a
big folder never sits in memory at once; a file that does not decode is listed and skipped.
When every image sits in a folder named after one of the checkpoint's classes
(``<class>/x.jpg``, also ``test/<class>/x.jpg``) the folder name is its true class and the
accuracy is reported too.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from facecls.data.decode import decode_images
from facecls.data.faces import FaceCrop
from facecls.data.sources import SYSTEM_FILES
from facecls.errors import UserError
from facecls.inference.device import select_device
from facecls.inference.runners import open_runner
from facecls.inference.tta import describe, with_tta
from facecls.inspect.images import to_picture
from facecls.io import atomic_write_json, atomic_write_text, check_writable_dir, csv_text
from facecls.plots import plt, save_figure

log = logging.getLogger(__name__)

UNKNOWN = "unknown"  # the prediction shown when the top probability is below threshold=
CHUNK = 512          # files decoded at a time


def list_inputs(path: str | os.PathLike) -> tuple[Path, list[str]]:
    """(root, files relative to it): the file itself, or every visible file below the folder."""
    path = Path(os.path.expanduser(str(path)))
    if path.is_file():
        return path.parent, [path.name]
    if not path.is_dir():
        raise UserError(f"input={path} does not exist — give an image file or a folder of images.")
    files = []
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [(Path(dirpath) / f).relative_to(path).as_posix() for f in sorted(filenames)
                  if not f.startswith(".") and f.lower() not in SYSTEM_FILES]
    if not files:
        raise UserError(f"input={path} holds no files — put the images to classify in it.")
    return path, files


def true_labels(files: list[str], classes: list[str]) -> list[int] | None:
    """Each file's class from its folder name, when every file is in a class-named folder."""
    index = {c: i for i, c in enumerate(classes)}
    parents = [Path(f).parent.name for f in files]
    return [index[p] for p in parents] if all(p in index for p in parents) else None


@dataclass
class Predictions:
    files: list[str]                 # the readable files, in input order
    probabilities: torch.Tensor      # N×C softmax
    pixels: list[torch.Tensor]       # the first images (for the contact sheet), uint8 3×S×S
    skipped: dict[str, str] = field(default_factory=dict)


def predict_files(model, prepare, prep, root: Path, files: list[str], batch_size: int, keep_pixels: int,
                  progress: bool | None = None, faces: FaceCrop | None = None) -> Predictions:
    """Decode ``files`` chunk by chunk (cropped to their faces when the model was trained on
    face crops) and run them through ``model`` in batches."""
    kept, probabilities, pixels, skipped = [], [], [], {}
    bar = tqdm(total=len(files), desc="predicting", unit="img", disable=None if progress is None else not progress)
    for start in range(0, len(files), CHUNK):
        chunk = files[start:start + CHUNK]
        images, keep, bad = decode_images(root, chunk, prep, cache_dir=None, progress=False, faces=faces)
        skipped.update(bad)  # images holds the readable files only
        kept += [f for f, k in zip(chunk, keep.tolist()) if k]
        # (inference mode only here: decode_images fills its tensor from worker threads,
        # which may not update an inference tensor)
        with torch.inference_mode():
            for b in range(0, len(images), batch_size):
                batch = images[b:b + batch_size]
                probabilities.append(model(prepare(batch, train=False)).float().softmax(1).cpu())
        pixels += list(images[:max(0, keep_pixels - len(pixels))])
        bar.update(len(chunk))
    bar.close()
    probs = torch.cat(probabilities) if probabilities else torch.empty(0, 0)
    return Predictions(kept, probs, pixels, skipped)


def prediction_rows(result: Predictions, classes: list[str], top_k: int, threshold: float | None,
                    labels: dict[str, int] | None) -> tuple[list[str], list[list]]:
    """predictions.csv: file, (true, correct,) predicted, confidence, then top-k names and probabilities."""
    k = min(top_k, len(classes))
    header = ["file", *(["true", "correct"] if labels is not None else []), "predicted", "confidence"]
    header += [c for i in range(1, k + 1) for c in (f"top{i}", f"p{i}")]
    rows = []
    for f, p in zip(result.files, result.probabilities):
        values, indices = p.topk(k)
        name = classes[int(indices[0])] if threshold is None or values[0] >= threshold else UNKNOWN
        row = [f]
        if labels is not None:
            row += [classes[labels[f]], int(name == classes[labels[f]])]
        row += [name, f"{values[0]:.6f}"]
        row += [x for v, i in zip(values.tolist(), indices.tolist()) for x in (classes[i], f"{v:.6f}")]
        rows.append(row)
    return header, rows


def contact_sheet(pixels: list[torch.Tensor], names: list[str], predicted: list[str], confidence: list[float],
                  path: Path, columns: int = 8) -> Path:
    """The first images in a grid, each titled with its predicted name and confidence."""
    count = len(pixels)
    cols = max(1, min(columns, count))
    rows = max(1, -(-count // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, name, label, conf in zip(axes.flat, pixels, names, predicted, confidence):
        ax.imshow(to_picture(image), interpolation="nearest")
        ax.set_title(f"{label}\n{conf:.2f} · {Path(name).name[:18]}", fontsize=7,
                     color="gray" if label == UNKNOWN else "black")
    return save_figure(fig, path)


def model_source(cfg) -> Path:
    """The model to score with: ``ckpt=`` (a checkpoint) or ``model=`` (a checkpoint or a file from
    facecls export), exactly one of them."""
    ckpt, model = cfg.get("ckpt"), cfg.get("model_file")
    if bool(ckpt) == bool(model):
        raise UserError("give the model to predict with once: ckpt=<run dir>/checkpoints/best.pt or "
                        "model=FILE (.onnx, TorchScript .pt or a checkpoint).")
    return Path(ckpt or model).expanduser()


def default_out(source: Path) -> Path:
    """<run dir>/predict for a file inside a run dir (checkpoints/, export/), else <its folder>/predict."""
    folder = source.resolve().parent
    return (folder.parent if folder.name in ("checkpoints", "export") else folder) / "predict"


def run_predict(cfg) -> dict:
    """Load the checkpoint, score ``cfg.input``, write predictions.csv, skipped.csv,
    predict.json (counts, accuracy) and contact_sheet.png into ``cfg.out`` (default:
    <run dir>/predict)."""
    threshold = cfg.threshold
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0 <= threshold <= 1):
        raise UserError(f"threshold={threshold} is invalid — give a probability between 0 and 1 (or null).")
    if isinstance(cfg.top_k, bool) or not isinstance(cfg.top_k, int) or cfg.top_k < 1:
        raise UserError(f"top_k={cfg.top_k} is invalid — give a whole number >= 1.")
    device = select_device(cfg.trainer.device)
    source = model_source(cfg)
    runner = open_runner(source, device)  # a checkpoint, an ONNX or a TorchScript file: one interface
    info = runner.info
    if info.output != "logits":
        raise UserError(f"'{source}' is an embedding model: it outputs face embeddings, not class scores — use "
                        "facecls verify (pairs) or facecls enroll + facecls identify (a gallery).")
    out = Path(cfg.out).expanduser() if cfg.out else default_out(source)
    check_writable_dir(out, what="predictions", need_bytes=2**20)  # before the work, not after it
    prep = info.preprocessing()
    root, files = list_inputs(cfg.input)
    # the runner takes the decoded uint8 pixels as they are: normalisation is inside the model
    tta = cfg.get("eval", {}).get("tta")  # eval.tta=[flip]: softmax averaged over the views
    result = predict_files(with_tta(runner, tta), lambda batch, train=False: batch, prep, root, files,
                           int(cfg.trainer.eval_batch_size or 64), int(cfg.count), cfg.get("progress"),
                           FaceCrop(**info.faces))
    if result.skipped:
        shown = "; ".join(f"{f} ({why})" for f, why in list(result.skipped.items())[:10])
        log.warning("Skipped %d unreadable file(s): %s", len(result.skipped), shown)
    labels = true_labels(result.files, info.classes)
    header, rows = prediction_rows(result, info.classes, cfg.top_k, threshold,
                                   dict(zip(result.files, labels)) if labels is not None else None)
    atomic_write_text(out / "predictions.csv", csv_text(header, rows))
    atomic_write_text(out / "skipped.csv", csv_text(["file", "reason"], result.skipped.items()))
    at = header.index("predicted")
    summary = {"images": len(rows), "skipped": sorted(result.skipped),
               "unknown": sum(r[at] == UNKNOWN for r in rows), "accuracy": None, "out": str(out)}
    if labels is not None and rows:
        summary["accuracy"] = sum(r[header.index("correct")] for r in rows) / len(rows)
    if result.pixels:
        contact_sheet(result.pixels, result.files, [r[at] for r in rows], [float(r[at + 1]) for r in rows],
                      out / "contact_sheet.png")
    atomic_write_json(out / "predict.json", {"ckpt" if runner.kind == "pytorch" else "model": str(source.resolve()),
                                              "engine": runner.kind, "input": str(root), "threshold": threshold,
                                              "tta": describe(tta),
                                              **summary})
    return summary  # the command prints the one summary line

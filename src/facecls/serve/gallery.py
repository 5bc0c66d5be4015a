"""The gallery behind ``POST /identify``: a file written by ``facecls enroll``, loaded once at start-up
and answered exactly as ``facecls identify`` answers (facecls.faces.gallery: the same fingerprint
check, threshold choice and decision rule), so a photo gets the same person, similarity and
decision from the service as from the command line.

A gallery made by another model is refused at start-up in one line (the weights' fingerprint
the gallery recorded against the served model's: a checkpoint's, or the one an export embedded).
The gallery holds embeddings and file names only; the service reports how many people it holds,
never who, except as the answer to an upload.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from facecls.errors import UserError
from facecls.faces.gallery import check_gallery_model, choose_threshold, read_gallery
from facecls.inference.runners import Runner


@dataclass
class ServedGallery:
    """An enrolled gallery and its default decision threshold (``far``'s, chosen at start-up)."""

    gallery: dict
    path: Path
    far: float | None
    threshold: float | None   # None when far is None: each request then gives threshold=
    rule: str | None

    @property
    def flip(self) -> bool:
        """Enrolled with mirror fusion: probes are fused with their mirror image too."""
        return bool(self.gallery.get("flip"))

    def decide(self, far: float | None, threshold: float | None) -> tuple[float, str]:
        """The threshold of a request: ``threshold=``, else ``far=``'s, else the start-up one."""
        if threshold is None and far is None:
            if self.threshold is None:
                raise UserError("this service has no default threshold (serve.far=null) — pass ?threshold= or ?far=.")
            return self.threshold, self.rule
        return choose_threshold(self.gallery, far, threshold)

    def describe(self) -> dict:
        g = self.gallery
        return {"file": self.path.name, "people": len(g["people"]), "photos": len(g["files"]), "flip": self.flip,
                "far": self.far, "threshold": self.threshold, "threshold_rule": self.rule}


def open_gallery(path: str | Path, runner: Runner, far: float | None) -> ServedGallery:
    """Read the gallery at ``path`` for ``runner``'s model; one line when it cannot serve it."""
    path = Path(path).expanduser()
    info = runner.info
    if info.output != "embedding":
        raise UserError(f"gallery= needs an embedding model; {runner.source.name} is a classifier (output: logits) "
                        "— serve a model trained with model.embedding_dim, or drop gallery=.")
    gallery = read_gallery(path)
    if info.fingerprint is None:
        raise UserError(f"{runner.source} records no weights fingerprint, so the gallery cannot be checked against "
                        "it — export the checkpoint again with this facecls version.")
    check_gallery_model(gallery, path, info.fingerprint, str(runner.source))
    threshold, rule = choose_threshold(gallery, far, None) if far is not None else (None, None)
    return ServedGallery(gallery, path, far, threshold, rule)


def fused_embeddings(outputs: torch.Tensor, count: int, flip: bool) -> torch.Tensor:
    """L2-normalised embeddings of ``count`` images from the runner's outputs: the first ``count``
    rows, plus (``flip``) the next ``count`` rows — the mirror images — summed in before normalising,
    as facecls.inference.embeddings.embed_images fuses them."""
    emb = outputs[:count].float()
    if flip:
        emb = emb + outputs[count:2 * count].float()
    return F.normalize(emb, dim=1)

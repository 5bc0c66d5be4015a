"""A trained checkpoint as a face embedder: what verify, enroll and identify share.

Loading needs the checkpoint only (never the training data): the model, its preprocessing and
its face-cropping settings (``data.faces``) come from the checkpoint, so an image is decoded and
cropped exactly as training decoded it. Any classification checkpoint works (its penultimate
features, :meth:`facecls.models.base.FaceModel.embed`); an embedding checkpoint gives its neck.

The fingerprint is a hash of the model's weights: a gallery remembers the fingerprint of the
model that embedded it, and embeddings of two models are never compared.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from facecls.data.batches import BatchPreparer
from facecls.data.decode import decode_images
from facecls.data.faces import FaceCrop
from facecls.data.preprocess import Preprocess
from facecls.errors import UserError
from facecls.inference.checkpoint import Checkpoint, load_checkpoint
from facecls.inference.device import select_device
from facecls.inference.embeddings import embed_images, runner_embeddings
from facecls.inference.evaluate import EvalSettings
from facecls.inference.loading import rebuild_model, run_dir_of
from facecls.inference.model_info import weights_fingerprint
from facecls.inference.runners import Runner, is_torchscript, open_runner

log = logging.getLogger(__name__)

CHUNK = 2048  # images decoded at a time: a big pairs file or gallery never sits in memory at once


@dataclass
class Embedded:
    """Embeddings (L2-normalised, N×D, CPU) of the readable ``files``; the others in ``skipped``."""

    files: list[str]
    embeddings: torch.Tensor
    skipped: dict[str, str] = field(default_factory=dict)
    pixels: list[torch.Tensor] = field(default_factory=list)  # the first images, when asked (contact sheets)


@dataclass
class Embedder:
    """A checkpoint's model — or an exported embedding model (``runner``; then no checkpoint, model
    or preparer) — ready to embed image files (see the module docstring)."""

    checkpoint: Checkpoint | None
    config: DictConfig          # the run's training config (an export: its model, loss and faces only)
    model: torch.nn.Module | None  # eval mode, on the device
    prep: Preprocess
    prepare: BatchPreparer | None
    faces: FaceCrop
    settings: EvalSettings
    source: Path                # the checkpoint file
    fingerprint: str
    dim: int
    runner: Runner | None = None   # an exported file (ONNX / TorchScript) through facecls.inference.runners

    @property
    def run_dir(self) -> Path:
        return run_dir_of(self.source)

    @property
    def kind(self) -> str:
        """What the embedding is, in words (verify.json, logs)."""
        if self.runner is not None:
            return f"embedding ({self.dim}-d, loss={self.loss_name}, {self.runner.kind} export {self.source.name})"
        if getattr(self.model, "embedding_dim", None) is not None:
            return f"embedding ({self.dim}-d neck, loss={self.loss_name})"
        return f"penultimate features of a classifier ({self.dim}-d, loss={self.loss_name})"

    @property
    def loss_name(self) -> str:
        target = str(OmegaConf.select(self.config, "loss._target_", default="") or "")
        return target.rsplit(".", 1)[-1].lower() or "cross_entropy"

    def embed_pixels(self, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
        if self.runner is not None:
            return runner_embeddings(self.runner, images, self.settings.batch_size, flip=flip)
        return embed_images(self.model, images, self.prepare, self.settings, flip=flip)

    def embed_files(self, root: Path, files: list[str], *, flip: bool = False, cache_dir: Path | None = None,
                    keep_pixels: int = 0, both: bool = False) -> tuple[Embedded, Embedded | None]:
        """Decode ``files`` (relative to ``root``) chunk by chunk — through the disk cache when
        ``cache_dir`` is given — and embed each once. With ``both`` the mirror-fused embeddings
        are returned too (second item), else None."""
        kept, plain, fused, pixels, skipped = [], [], [], [], {}
        for start in range(0, len(files), CHUNK):
            chunk = files[start:start + CHUNK]
            images, keep, bad = decode_images(root, chunk, self.prep, cache_dir, progress=False, faces=self.faces)
            skipped.update(bad)
            kept += [f for f, k in zip(chunk, keep.tolist()) if k]
            plain.append(self.embed_pixels(images, flip=flip and not both))
            if both:
                fused.append(self.embed_pixels(images, flip=True))
            pixels += list(images[:max(0, keep_pixels - len(pixels))])
        empty = torch.empty(0, self.dim)
        first = Embedded(kept, torch.cat(plain) if kept else empty, skipped, pixels)
        second = Embedded(kept, torch.cat(fused) if kept else empty, skipped, pixels) if both else None
        return first, second


def load_embedder(ckpt_path: str | Path, device: str = "auto", batch_size: int | None = None) -> Embedder:
    """The checkpoint's model as an :class:`Embedder`; a checkpoint whose model has no layer to
    take embeddings from is refused in one line. An exported embedding model (.onnx, TorchScript)
    embeds through its runner: same fingerprint as its checkpoint, so galleries work with either."""
    source = Path(ckpt_path).expanduser()
    if source.suffix.lower() == ".onnx" or is_torchscript(source):
        return exported_embedder(source, device, batch_size)
    ckpt = load_checkpoint(source)
    config = OmegaConf.create(ckpt.config)
    prep = ckpt.preprocessing()
    torch_device = select_device(device)
    model = rebuild_model(ckpt, len(ckpt.classes), source=str(source)).to(torch_device).eval()
    channels_last = bool(config.trainer.get("channels_last", False))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    prepare = BatchPreparer(prep, torch_device, None, channels_last)
    # float32 whatever precision the run trained in: a gallery, verify.json's thresholds, `facecls
    # serve` and an exported file must compare like with like, and bf16 moves a cosine by ~1e-3 —
    # enough to flip a decision at the threshold (tests/test_serve_gallery.py on an AMX CPU)
    settings = EvalSettings(torch_device, int(batch_size or config.trainer.get("eval_batch_size") or 256),
                            amp=False, progress=False)
    probe = torch.zeros((1, 3, prep.size, prep.size), dtype=torch.uint8)
    try:
        dim = int(embed_images(model, probe, prepare, settings).shape[1])
    except UserError as err:
        raise UserError(f"{source}: no usable embedding layer: {err}") from None
    faces = FaceCrop(**(config.data.get("faces") or {}))
    return Embedder(ckpt, config, model, prep, prepare, faces, settings, source.resolve(),
                    weights_fingerprint(ckpt.model), dim)


def exported_embedder(source: Path, device: str = "auto", batch_size: int | None = None) -> Embedder:
    """An exported embedding model (facecls export) as an :class:`Embedder`; one line for an
    exported classifier (its file outputs class scores only) or an export without a fingerprint."""
    torch_device = select_device(device)
    runner = open_runner(source, torch_device)
    info = runner.info
    if info.output != "embedding":
        raise UserError(f"{source} is an exported classifier: it outputs class scores, not embeddings — use its "
                        "checkpoint (ckpt=<run>/checkpoints/best.pt: its penultimate features) or export an "
                        "embedding model (model.embedding_dim).")
    if not info.fingerprint:
        raise UserError(f"{source} records no weights fingerprint (exported by an older facecls) — export it again.")
    config = OmegaConf.create({"model": info.extra.get("model", {}), "data": {"faces": info.faces},
                               "loss": {"_target_": info.extra.get("loss") or ""}})
    settings = EvalSettings(torch_device, int(batch_size or 256), amp=False, progress=False)
    return Embedder(None, config, None, info.preprocessing(), None, FaceCrop(**info.faces), settings,
                    source.resolve(), info.fingerprint, int(info.embedding_dim), runner)

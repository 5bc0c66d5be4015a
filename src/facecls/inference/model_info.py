"""What a trained model needs around it to be used anywhere: its classes, its preprocessing and
what it outputs — the same description whether it sits in a checkpoint, an ONNX file or a
TorchScript file (exports embed it as JSON, so a model file is self-describing).

Kept apart from the runners so that an exported file can be described without torch models.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

import facecls
from facecls.data.preprocess import Preprocess
from facecls.errors import UserError
from facecls.inference.checkpoint import Checkpoint

log = logging.getLogger(__name__)

FORMAT = "facecls-model/1"
# The exported graph's input: what a caller must hand it (normalisation happens inside).
INPUT = "uint8 RGB images N×3×H×W (0–255), H = W = input_size; normalised inside the model"
OUTPUTS = ("logits", "embedding")


@dataclass
class ModelInfo:
    """A model's interface. ``output`` is ``logits`` (a classifier: N×len(classes)) or
    ``embedding`` (an open-set model: N×embedding_dim, compared by cosine similarity at
    ``threshold``). ``extra`` carries provenance: model config, facecls version, the source
    checkpoint's sha256, the run's test metrics, the export's parity figures."""

    classes: list[str]
    preprocess: dict                 # Preprocess as a dict (size, resize, mean, std, interpolation)
    output: str = "logits"
    embedding_dim: int | None = None
    threshold: float | None = None
    threshold_rule: str | None = None  # where ``threshold`` came from (verify.json, which FAR)
    fingerprint: str | None = None     # weights_fingerprint of the checkpoint (galleries are checked against it)
    faces: dict = field(default_factory=dict)  # data.faces of the run (face detection before decoding)
    extra: dict = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        return int(self.preprocess["size"])

    def preprocessing(self) -> Preprocess:
        return Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.preprocess.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "input": INPUT, "input_size": self.input_size,
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_metrics(run_dir: Path) -> dict:
    """The run's test figures from metrics.json (empty when the run dir is gone)."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in metrics.items() if k.startswith("test_") and isinstance(v, (int, float))}


def weights_fingerprint(state_dict: dict) -> str:
    """SHA-256 (first 16 hex digits) of every weight's name, dtype, shape and bytes: the identity
    of a model's weights. Galleries and verify.json record it; embeddings of two models are never compared."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        value = state_dict[key]
        if not torch.is_tensor(value):
            digest.update(f"{key}\0{value!r}\n".encode())
            continue
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(value.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def far_key(far: float) -> str:
    """The JSON key of a FAR in verify.json and galleries: ``1e-01``, ``1e-03``."""
    return f"{far:.0e}"


def verification_threshold(run_dir: Path | None, fingerprint: str,
                           far: float | None) -> tuple[float | None, str | None]:
    """The decision threshold ``facecls verify`` chose for this model, from ``run_dir/verify.json``:
    its threshold for ``far`` (TAR@FAR table), else (``far`` None or not measured) the one it reported
    (its best accuracy, or ``verify.far``). (None, None) when there is none for these weights — a verify.json
    of other weights (another checkpoint of the run) or of mirror-fused scores is not used."""
    if far is not None and (isinstance(far, bool) or not isinstance(far, (int, float)) or not 0 < far <= 1):
        raise UserError(f"far={far} is not a rate — give a false-accept rate in (0, 1], e.g. far=1e-3 (or null).")
    path = run_dir / "verify.json" if run_dir else None
    if path is None or not path.is_file():
        return None, None
    try:
        verify = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("Could not read %s (%s): no verification threshold.", path, err)
        return None, None
    if verify.get("model_fingerprint") != fingerprint:
        log.warning("%s was written for other weights (fingerprint %s, this checkpoint %s): its threshold is not "
                    "used — run facecls verify on this checkpoint.", path, verify.get("model_fingerprint"),
                    fingerprint)
        return None, None
    if (verify.get("flip") or {}).get("used"):
        log.warning("%s scored mirror-fused embeddings (verify.flip=true): its thresholds do not fit single images "
                    "— run facecls verify with verify.flip=false for a threshold.", path)
        return None, None
    entry = (verify.get("tar_at_far") or {}).get(far_key(float(far))) if far is not None else None
    if entry is not None:
        return float(entry["threshold"]), f"verify.json: FAR {far_key(float(far))} on pairs of unseen people"
    if verify.get("threshold") is None:
        return None, None
    own = f"verify.json: {verify.get('threshold_rule', 'its threshold')}"
    if far is not None:
        log.warning("%s measured no threshold for FAR %s (it has FAR %s): using its own threshold (%s) — run facecls "
                    "verify with more pairs for that FAR.", path, far_key(float(far)),
                    ", ".join(verify.get("tar_at_far") or {}) or "none", own)
        own = f"{own} (FAR {far_key(float(far))} was not measured)"
    return float(verify["threshold"]), own


def describe_checkpoint(ckpt: Checkpoint, path: str | Path, run_dir: Path | None = None,
                        far: float | None = None) -> ModelInfo:
    """The ModelInfo of a checkpoint (an embedding model when its config sets model.embedding_dim);
    an embedding model's threshold is :func:`verification_threshold` for ``far``."""
    cfg = OmegaConf.create(ckpt.config)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    embedding_dim = model_cfg.get("embedding_dim")
    fingerprint = weights_fingerprint(ckpt.model)
    threshold, rule = verification_threshold(run_dir, fingerprint, far) if embedding_dim else (None, None)
    faces = OmegaConf.to_container(cfg.data.faces, resolve=True) if OmegaConf.select(cfg, "data.faces") else {}
    extra = {"model": {k: model_cfg[k] for k in ("_target_", "name", "source") if k in model_cfg},
             "loss": OmegaConf.select(cfg, "loss._target_", default=None),
             "facecls_version": facecls.__version__, "checkpoint": Path(path).name,
             "checkpoint_sha256": file_sha256(path), "epoch": ckpt.epoch,
             "metrics": run_metrics(run_dir) if run_dir else {}}
    return ModelInfo(classes=list(ckpt.classes), preprocess=dict(ckpt.preprocess),
                     output="embedding" if embedding_dim else "logits",
                     embedding_dim=int(embedding_dim) if embedding_dim else None,
                     threshold=threshold, threshold_rule=rule, fingerprint=fingerprint, faces=faces, extra=extra)

"""Rebuild a trained run from its checkpoint: config, data splits, model with its weights.

Used by every command that reads a run (eval, visualize, robustness, …)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from facecls.data.batches import BatchPreparer
from facecls.data.dataset import DataBundle, build_data
from facecls.errors import UserError
from facecls.inference.checkpoint import Checkpoint, load_checkpoint
from facecls.inference.device import amp_flag, select_device
from facecls.inference.evaluate import EvalSettings
from facecls.io import check_writable_dir
from facecls.models import build_model
from facecls.models.base import restore_model
from facecls.models.pretrained import skip_pretrained

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    checkpoint: Checkpoint
    config: DictConfig      # the run's resolved training config
    model: torch.nn.Module  # in eval mode, on `device`
    data: DataBundle
    prepare: BatchPreparer  # no augmentation
    device: torch.device
    run_dir: Path           # the folder that holds checkpoints/

    @property
    def classes(self) -> list[str]:
        return self.data.classes

    def eval_settings(self, batch_size: int | None = None) -> EvalSettings:
        """Scoring settings: ``batch_size`` (None = as in training) and the run's precision."""
        trained = self.config.trainer
        return EvalSettings(self.device, int(batch_size or trained.eval_batch_size),
                            amp=amp_flag(trained.get("amp", False), self.device), progress=False)

    def output_dir(self, out: str | None) -> Path:
        """Where a command writes its files: ``out=DIR`` when given, else the run dir — checked
        (a folder, writable, 1 MB free) before the command scores anything."""
        return check_writable_dir(Path(out).expanduser() if out else self.run_dir, need_bytes=2**20,
                                  what="results", fix="pass out=DIR on a writable disk")


def run_dir_of(ckpt_path: Path) -> Path:
    ckpt_path = Path(ckpt_path).expanduser().resolve()
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent


def rebuild_model(ckpt: Checkpoint, num_classes: int, source: str) -> torch.nn.Module:
    """The checkpoint's model with its weights (on the CPU, in train mode). The checkpoint
    holds every weight: pretrained (ImageNet) weights are never looked for again."""
    model = build_model(skip_pretrained(OmegaConf.create(ckpt.config).model), num_classes=num_classes)
    restore_model(model, ckpt.model, source=source)
    return model


def refuse_embedding_model(cfg: DictConfig, source: str | Path) -> None:
    """One line for a command that scores class logits (eval, predict, robustness, visualize, …)
    handed an embedding model: its output would be read as logits and every figure would be wrong."""
    dim = OmegaConf.select(cfg, "model.embedding_dim", default=None)
    if dim:
        loss = str(OmegaConf.select(cfg, "loss._target_", default="") or "").rsplit(".", 1)[-1].lower()
        raise UserError(f"{source} is an embedding model (model.embedding_dim={dim}{', loss=' + loss if loss else ''}"
                        "): it outputs face embeddings, not class scores — score it with facecls verify ckpt=… "
                        "(pairs) or facecls enroll + facecls identify (a gallery).")


def load_run(ckpt_path: str | Path, device_name: str = "auto", data_root: str | None = None,
             cache_dir: str | None = None, progress: bool | None = None, allow_embedding: bool = False) -> LoadedRun:
    """Load ``ckpt_path`` and rebuild its data (same split) and model. An embedding model is
    refused in one line unless ``allow_embedding`` (callers that embed: verify, export's parity)."""
    device = select_device(device_name)
    ckpt = load_checkpoint(ckpt_path)
    cfg = OmegaConf.create(ckpt.config)
    if not allow_embedding:
        refuse_embedding_model(cfg, ckpt_path)
    if data_root:
        cfg.data.root = data_root
        cfg.data.source.root = data_root
    prep = ckpt.preprocessing()
    data = build_data(cfg.data, prep, cache_dir, progress)
    if data.classes != ckpt.classes:
        raise UserError(f"the data at '{data.root}' has classes {data.classes[:5]}… but the checkpoint "
                        f"was trained on {ckpt.classes[:5]}… — point data.root at the same classes.")
    model = rebuild_model(ckpt, len(data.classes), source=str(ckpt_path))
    channels_last = bool(cfg.trainer.get("channels_last", False))
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    prepare = BatchPreparer(prep, device, None, channels_last)
    return LoadedRun(ckpt, cfg, model, data, prepare, device, run_dir_of(Path(ckpt_path)))

"""Rebuild a trained run from its checkpoint: config, data splits, model with its weights.

Used by every command that reads a run (eval, visualize, robustness, …)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from facecls.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    checkpoint: dict
    config: DictConfig      # the run's resolved training config
    model: torch.nn.Module  # in eval mode, on `device`
    data: object            # facecls.data.dataset.DataBundle
    prepare: object         # facecls.data.batches.BatchPreparer (no augmentation)
    device: torch.device
    run_dir: Path           # the folder that holds checkpoints/

    @property
    def classes(self) -> list[str]:
        return self.data.classes


def run_dir_of(ckpt_path: Path) -> Path:
    ckpt_path = Path(ckpt_path).expanduser().resolve()
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent


def load_run(ckpt_path: str | Path, device_name: str = "auto", data_root: str | None = None,
             cache_dir: str | None = None, progress: bool | None = None) -> LoadedRun:
    """Load ``ckpt_path`` and rebuild its data (same split) and model."""
    from facecls.checkpoint import load_checkpoint, restore_model
    from facecls.data.batches import BatchPreparer
    from facecls.data.dataset import build_data
    from facecls.data.decode import Preprocess
    from facecls.models import build_model
    from facecls.models.pretrained import skip_pretrained
    from facecls.runtime import select_device

    device = select_device(device_name)
    ckpt = load_checkpoint(ckpt_path)
    cfg = OmegaConf.create(ckpt["config"])
    if data_root:
        cfg.data.root = data_root
        cfg.data.source.root = data_root
    prep = Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["preprocess"].items()})
    data = build_data(cfg.data, prep, cache_dir, progress)
    if data.classes != ckpt["classes"]:
        raise UserError(f"the data at '{data.root}' has classes {data.classes[:5]}… but the checkpoint "
                        f"was trained on {ckpt['classes'][:5]}… — point data.root at the same classes.")
    # The checkpoint holds every weight: never look for pretrained (ImageNet) weights again.
    model = build_model(skip_pretrained(cfg.model), num_classes=len(data.classes))
    restore_model(model, ckpt["model"], source=str(ckpt_path))
    channels_last = bool(cfg.trainer.get("channels_last", False))
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    prepare = BatchPreparer(prep, device, None, channels_last)
    return LoadedRun(ckpt, cfg, model, data, prepare, device, run_dir_of(Path(ckpt_path)))

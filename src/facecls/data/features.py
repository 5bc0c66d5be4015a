"""A frozen backbone's features, computed once per split and reused across epochs and runs.

A frozen backbone gives the same output for the same image every epoch, so running it per
batch wastes nearly all of a head-only training epoch. Here each split goes through the
backbone once (eval mode, inference_mode, eval-sized batches); the features are kept in
memory (for the next run in the same process, e.g. a sweep) and on disk under
``<paths.cache_dir>/features/<key>.pt``. The key covers everything the features depend on:
the data (files, labels and decoded pixels of every split), the backbone (its layers and a
digest of its weights), the preprocessing, and the numerics (device type, AMP, memory format).

A model with a frozen backbone asks for its features through :class:`FeatureCache` (see
``FaceModel.training_view``); ``settings`` is the run's evaluation settings (device, batch
size, AMP, progress bars).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from facecls.config.checks import SPLITS
from facecls.data.batches import iterate_batches
from facecls.data.dataset import DataBundle, Split
from facecls.io import atomic_torch_save

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# The most recent features of this process, so a sweep over head settings computes them once.
# One entry only: features of a big dataset are large.
_recent: dict[str, dict[str, torch.Tensor]] = {}


def _hash_tensor(h, tensor: torch.Tensor) -> None:
    t = tensor.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, without a copy


def weights_digest(module: nn.Module) -> str:
    """sha256 of every parameter and buffer (names, shapes and values)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        _hash_tensor(h, tensor)
    return h.hexdigest()


def data_digest(data: DataBundle) -> str:
    """sha256 of each split's files, labels and decoded pixels."""
    h = hashlib.sha256()
    for name in SPLITS:
        split = data.split(name)
        h.update(json.dumps([name, split.files]).encode())
        _hash_tensor(h, split.labels)
        _hash_tensor(h, split.inputs)
    return h.hexdigest()


def feature_key(backbone: nn.Module, data: DataBundle, prepare, settings, identity: dict) -> str:
    """The cache key: data, backbone layers + weights, preprocessing and numerics."""
    parts = {
        "version": CACHE_VERSION,
        "data": data_digest(data),
        "layers": repr(backbone),
        "weights": weights_digest(backbone),
        "preprocess": dataclasses.asdict(data.preprocess),
        "device": settings.device.type,
        "amp": bool(settings.amp),
        "channels_last": bool(prepare.channels_last),
        **identity,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


@torch.inference_mode()
def compute_features(backbone: nn.Module, split: Split, prepare, settings, desc: str) -> torch.Tensor:
    """Run ``backbone`` over ``split`` once; float32 features on the CPU (N × C × H × W)."""
    was_training = backbone.training
    backbone.eval()
    chunks = []
    with tqdm(total=len(split), desc=desc, unit="img", leave=False,
              disable=None if settings.progress is None else not settings.progress) as bar:
        for x, _ in iterate_batches(split, settings.batch_size):
            with settings.autocast():
                out = backbone(prepare(x, train=False))
            # contiguous: a channels_last output flattens the same, but keep one layout on disk
            chunks.append(out.float().contiguous().cpu())
            bar.update(len(x))
    backbone.train(was_training)
    return torch.cat(chunks)


def _load(path: Path, data: DataBundle) -> dict[str, torch.Tensor] | None:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if all(len(saved[name]) == len(data.split(name)) for name in SPLITS):
            return {name: saved[name] for name in SPLITS}
        log.warning("Ignoring feature cache %s: its split sizes do not match", path)
    except Exception as err:  # a damaged cache is rebuilt, not trusted
        log.warning("Ignoring unreadable feature cache %s (%s)", path, err)
    return None


def cached_features(backbone: nn.Module, data: DataBundle, prepare, settings, cache_dir,
                    identity: dict | None = None) -> DataBundle:
    """``data`` with every split's images replaced by the backbone's features (from memory,
    disk, or computed now and saved). ``identity`` adds anything else the features depend on."""
    key = feature_key(backbone, data, prepare, settings, identity or {})
    path = Path(cache_dir).expanduser() / "features" / f"{key}.pt" if cache_dir else None
    features = _recent.get(key)
    if features is not None:
        log.info("Backbone features: reusing the ones in memory (key %s)", key)
    elif path is not None and path.is_file() and (features := _load(path, data)) is not None:
        log.info("Backbone features: loaded from cache %s — the backbone does not run", path)
    else:
        started = time.perf_counter()
        features = {name: compute_features(backbone, data.split(name), prepare, settings,
                                           desc=f"{name} features") for name in SPLITS}
        total = sum(len(f) for f in features.values())
        log.info("Backbone features: %d images → %s each in %.1f s", total,
                 "×".join(map(str, features["train"].shape[1:])), time.perf_counter() - started)
        if path is not None:
            try:
                atomic_torch_save(features, path)
                size_mb = path.stat().st_size / 2**20
                log.info("Backbone features cached in %s (%.0f MB)", path, size_mb)
            except OSError as err:
                log.warning("Could not write the feature cache %s (%s); continuing without it", path, err)
    _recent.clear()
    _recent[key] = features
    return dataclasses.replace(
        data, **{name: Split(features[name], data.split(name).labels, data.split(name).files)
                 for name in SPLITS})


@dataclass
class FeatureCache:
    """Where a frozen backbone's features are kept (``cache_dir``; None = memory only) and
    how they are computed (``settings``: device, batch size, AMP, progress bars)."""

    cache_dir: str | Path | None
    settings: object

    def features(self, backbone: nn.Module, data: DataBundle, prepare, identity: dict | None = None) -> DataBundle:
        """``data`` with each split's images replaced by ``backbone``'s features."""
        return cached_features(backbone, data, prepare, self.settings, self.cache_dir, identity)

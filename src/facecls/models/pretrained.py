"""Pretrained weights that work without a network, and the preprocessing that goes with them.

Resolution order for a torchvision weights enum (``model.source=timm``: see
:mod:`facecls.models.timm_source`, which reads its files with :func:`read_state_dict` too) (the first that exists wins):

1. ``model.weights_path=FILE`` — a torchvision-format state_dict you downloaded yourself;
2. torchvision's own cache, ``$TORCH_HOME/hub/checkpoints/<file name of the weights URL>``;
3. a download through the torchvision weights API (skipped when ``FACECLS_OFFLINE=1``).

When none works the run stops with one line naming the file to get and where to put it —
it never falls back to random weights behind the user's back. Every file is read with
``torch.load(weights_only=True)`` (or safetensors), so a weights file cannot run code.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from omegaconf import DictConfig, OmegaConf

from facecls.data.preprocess import Preprocess
from facecls.errors import UserError
from facecls.io import safe_torch_load
from facecls.models.base import restore_model

log = logging.getLogger(__name__)

# Set to 1 on machines without internet: a missing weights file is reported at once instead
# of after a failed connection attempt (and tests stay offline even where a network exists).
OFFLINE_ENV = "FACECLS_OFFLINE"
# A black-holed network would otherwise leave urlopen waiting for minutes.
DOWNLOAD_TIMEOUT_S = 30


def weights_file_name(weights) -> str:
    """The file name torchvision stores ``weights`` under, e.g. ``alexnet-owt-7be5be79.pth``."""
    return os.path.basename(urlparse(weights.url).path)


def torchvision_cache_path(weights) -> Path:
    """Where torchvision looks for (and downloads) ``weights``: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights_file_name(weights)


def read_state_dict(path: str | os.PathLike, option: str = "model.weights_path") -> dict:
    """Load a state_dict file safely; every problem is one UserError naming the file."""
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise UserError(f"{option}='{path}' does not exist — pass the path of a state_dict file of "
                        "model.name (.pth, or .safetensors for timm).")
    if path.suffix == ".safetensors":  # timm's and the Hugging Face hub's format (tensors only, no code)
        state = _read_safetensors(path)
    else:
        state = safe_torch_load(path, what="weights file", allowed="tensors", map_location="cpu",
                                fix="pass a state_dict saved with torch.save(model.state_dict(), FILE).")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"'{path}' does not hold a state_dict (a dict of tensors) — save one with "
                        "torch.save(model.state_dict(), FILE).")
    return state


def _read_safetensors(path: Path) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UserError(f"'{path}' is a .safetensors file and the safetensors package is missing — "
                        "pip install safetensors (it comes with the timm extra).") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # truncated, not safetensors, unreadable
        raise UserError(f"'{path}' is not a readable safetensors weights file ({type(err).__name__}) — "
                        "pass a state_dict saved with safetensors.torch.save_file or torch.save.") from None


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _missing_weights(weights, why: str) -> UserError:
    return UserError(
        f"pretrained weights are not available ({why}) — download {weights.url} to "
        f"{torchvision_cache_path(weights)} (or set TORCH_HOME), or pass "
        f"model.weights_path=/path/to/{weights_file_name(weights)}, or train from scratch with "
        "model.pretrained=false.")


def pretrained_state_dict(weights, weights_path: str | None = None, progress: bool = True) -> tuple[dict, str]:
    """Return (state_dict, where it came from) for a torchvision weights enum."""
    if weights_path:
        path = Path(os.path.expanduser(str(weights_path)))
        return read_state_dict(path), str(path)
    cached = torchvision_cache_path(weights)
    if cached.is_file():
        return read_state_dict(cached, option="the cached weights file"), str(cached)
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        raise _missing_weights(weights, f"{OFFLINE_ENV} is set, so nothing is downloaded")
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            # check_hash: a truncated or tampered download is refused, not loaded.
            state = weights.get_state_dict(progress=progress, check_hash=True)
    except (OSError, RuntimeError) as err:  # URLError, timeouts, DNS, a bad hash
        raise _missing_weights(weights, f"the download failed: {str(err).splitlines()[0][:120]}") from None
    return state, weights.url


def load_pretrained(model: torch.nn.Module, weights, weights_path: str | None = None,
                    progress: bool = True, adapt=None) -> str:
    """Fill ``model`` with the resolved weights (shape mismatches → one UserError); return the source.
    ``adapt(model, state) -> state`` may first fit the state to the model (ViT at another size)."""
    state, source = pretrained_state_dict(weights, weights_path, progress)
    if adapt is not None:
        state = adapt(model, state)
    restore_model(model, state, source=source)
    log.info("Pretrained weights %s from %s", weights, source)
    return source


def weights_preprocess(weights, input_size: int | None = None) -> Preprocess:
    """The preprocessing the weights were trained with (torchvision's ``weights.transforms()``:
    shorter side → resize with the weights' interpolation (bilinear for most, bicubic for
    EfficientNet, Swin, the SWAG ViTs…; antialiased, as torchvision's ImageClassification does),
    centre crop, ImageNet mean/std). ``input_size`` changes the crop (and the resize in
    proportion); None keeps the weights' own size."""
    t = weights.transforms()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    if input_size is not None:
        resize, crop = round(resize * int(input_size) / crop), int(input_size)
    interpolation = getattr(t, "interpolation", None)
    return Preprocess(size=crop, resize=resize, mean=tuple(t.mean), std=tuple(t.std),
                      interpolation=interpolation.value if interpolation is not None else "bilinear")


def skip_pretrained(model_cfg: DictConfig) -> DictConfig:
    """A copy of ``model_cfg`` that builds the architecture without fetching pretrained
    weights — for rebuilding a model whose checkpoint holds every weight anyway."""
    model_cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    if "pretrained" in model_cfg:
        model_cfg.pretrained = False
    if "weights_path" in model_cfg:
        model_cfg.weights_path = None
    return model_cfg

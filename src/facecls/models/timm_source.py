"""``model.source=timm``: timm's models as backbones of ``model=feature_extractor|finetune``.

Only where things come from differs from torchvision; the graph nodes, cutting, freezing and
the classifier are the same code in :mod:`facecls.models.backbone_graph` (its tracer becomes timm's
FX helpers, which know timm's leaf modules, when the network is a timm one):

* names: ``timm.list_models()``; ``model.weights`` is one of the model's pretrained tags
  (``a1_in1k``), DEFAULT (timm's default tag) or null (random init);
* preprocessing: ``timm.data.resolve_data_config`` on the tag's ``pretrained_cfg`` — input size,
  ``crop_pct`` (resize = floor(crop / crop_pct)), interpolation, mean, std;
* weights: ``model.weights_path=FILE`` (.pth or .safetensors), else the Hugging Face cache
  (the tag's ``hf_hub_id``) or torch hub's cache (its ``url``), else a download (not with
  ``FACECLS_OFFLINE=1``). Files are read by :func:`facecls.models.pretrained.read_state_dict`
  (``weights_only``/safetensors, one-line errors) and go into timm through
  ``pretrained_cfg_overlay=dict(state_dict=…)``, so timm's own checkpoint filter applies
  (ViT position embeddings resampled to ``model.input_size``);
* models built for one image size (``pretrained_cfg.fixed_input_size``: ViT, Swin, …) are built
  with ``img_size=model.input_size``;
* the classifier: ``get_classifier()`` (an ``nn.Linear``, or ``nn.Identity`` when the weights
  come without a head, e.g. DINOv2).

Only imported for ``model.source=timm`` (the ``timm`` extra).
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import math
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from timm.data import resolve_data_config
from timm.models import get_pretrained_cfg
from torch import nn

from facecls.data.preprocess import INTERPOLATIONS, Preprocess
from facecls.errors import UserError
from facecls.models.pretrained import DOWNLOAD_TIMEOUT_S, OFFLINE_ENV, _socket_timeout, read_state_dict

log = logging.getLogger(__name__)

DEFAULT = "DEFAULT"
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub repos hold, safest first


@functools.lru_cache(maxsize=1)
def _all_names() -> frozenset[str]:
    return frozenset(timm.list_models())


def model_names(pattern: str | None = None) -> list[str]:
    """timm's model names (``pattern``: a shell-style filter such as ``convnext*``)."""
    return timm.list_models(pattern or "")


def check_name(name: str) -> str:
    """``name`` if timm has it; else one line with the closest names (not all 1,300)."""
    names = _all_names()
    if name in names:
        return name
    base, dot, tag = name.partition(".")
    if dot and base in names:
        raise UserError(f"model.name={name} includes a weights tag — use model.name={base} model.weights={tag} "
                        "(model.source=timm).")
    close = difflib.get_close_matches(name, sorted(names), n=5, cutoff=0.6)
    prefix = re.match(r"[a-z]*", (close[0] if close else name).lower()).group(0)  # resnt18 → resnet*
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(f"unknown model.name '{name}' for model.source=timm — {hint}(`facecls models source=timm "
                    f"filter='{prefix}*'` lists timm's names).")


def tags(name: str) -> list[str]:
    """The pretrained tags timm has for ``name`` (``a1_in1k``, ``tv_in1k``, …)."""
    return [full.partition(".")[2] for full in timm.list_pretrained(f"{name}.*") if full.partition(".")[0] == name]


def weight_names(name: str) -> list[str]:
    return [DEFAULT, *tags(name)]


def default_tag(name: str) -> str | None:
    """The tag DEFAULT stands for (timm's default), None when timm has no weights for ``name``."""
    available = tags(name)
    cfg = get_pretrained_cfg(name)
    tag = getattr(cfg, "tag", None)
    return tag if tag in available else (available[0] if available else None)


def resolve_tag(name: str, weights: str | None, strict: bool = True) -> str | None:
    """``model.weights`` (DEFAULT, a tag, or null) → the tag; None for random init. DEFAULT for a
    model timm has no weights for is an error (``strict``) or None (only its config is wanted)."""
    if weights is None:
        return None
    if str(weights) == DEFAULT:
        tag = default_tag(name)
        if tag is None and strict:
            raise UserError(f"timm has no pretrained weights for {name} — use model.weights=null (random init).")
        return tag
    available = tags(name)
    if str(weights) not in available:
        raise UserError(f"unknown model.weights '{weights}' for timm's {name} — choose one of: "
                        f"{', '.join(weight_names(name)) if available else '(none: timm has no weights for it)'} "
                        "(or null for random init).")
    return str(weights)


def pretrained_cfg(name: str, tag: str | None) -> dict:
    """The tag's ``pretrained_cfg`` (no tag: the model's default one)."""
    cfg = get_pretrained_cfg(f"{name}.{tag}" if tag else name)
    return cfg.to_dict() if cfg is not None else {}


def _cfg_of(name: str, weights: str | None) -> tuple[str | None, dict]:
    """(tag, pretrained_cfg) the preprocessing and the architecture follow: the chosen weights',
    or DEFAULT's for random init (so runs compare, as for torchvision)."""
    tag = resolve_tag(check_name(name), DEFAULT if weights is None else weights, strict=False)
    return tag, pretrained_cfg(name, tag)


def own_size(name: str, weights: str | None) -> int:
    return int(_cfg_of(name, weights)[1].get("input_size", (3, 224, 224))[-1])


def preprocess_of(name: str, weights: str | None, input_size: int | None) -> Preprocess:
    """``resolve_data_config`` of the weights' ``pretrained_cfg``: the crop (``input_size``
    overrides it), the resize from ``crop_pct``, interpolation, mean and std."""
    _, cfg = _cfg_of(name, weights)
    data = resolve_data_config({}, pretrained_cfg=cfg)
    crop = int(input_size) if input_size is not None else int(data["input_size"][-1])
    crop_pct = float(data.get("crop_pct") or 1.0)
    interpolation = str(data.get("interpolation", "bicubic"))
    if interpolation not in INTERPOLATIONS:  # timm's 'random' (a training-time choice)
        interpolation = "bicubic"
    mode = data.get("crop_mode", "center")
    resize: int | None = math.floor(crop / crop_pct)
    if mode == "squash":  # resize both sides, no crop: facecls squashes the whole image
        resize = None
        if crop_pct != 1.0:
            log.info("timm %s squashes to %d px then crops %.3f of it; facecls squashes to %d px (no crop)",
                     name, math.floor(crop / crop_pct), crop_pct, crop)
    elif mode != "center":
        log.info("timm %s uses crop_mode=%s; facecls centre-crops", name, mode)
    return Preprocess(size=crop, resize=resize, mean=tuple(float(v) for v in data["mean"]),
                      std=tuple(float(v) for v in data["std"]), interpolation=interpolation)


def _size_kwargs(cfg: dict, size: int | None) -> dict:
    """``img_size`` for a model built for one size (timm's ``fixed_input_size``), when it differs."""
    own = int(cfg.get("input_size", (3, 224, 224))[-1])
    if size is None or not cfg.get("fixed_input_size") or int(size) == own:
        return {}
    return {"img_size": int(size)}


def construct(name: str, weights: str | None, size: int | None = None, device: str | None = None,
              option: str = "model.input_size") -> nn.Module:
    """timm's ``name`` with random weights (the architecture of the weights' tag: its number of
    classes), built for size×size where it fixes its size; ``device='meta'``: without memory."""
    tag, cfg = _cfg_of(name, weights)
    kwargs = _size_kwargs(cfg, size)
    try:
        with torch.device(device) if device else contextlib.nullcontext():
            return timm.create_model(f"{name}.{tag}" if tag else name, pretrained=False, **kwargs)
    except (TypeError, AssertionError, ValueError, RuntimeError) as err:
        if not kwargs:
            raise
        own = int(cfg["input_size"][-1])
        raise UserError(f"{option}={size} does not fit: timm's {name} is built for one size ({own} px) and "
                        f"refuses {size} ({_first_line(err)}) — use another size, or null for {own}.") from None


def _first_line(err: Exception, limit: int = 160) -> str:
    """The telling line of an error (load_state_dict's first detail, not its heading), shortened."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[1] if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else type(err).__name__)
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


# --- weights ---------------------------------------------------------------------------------------

def _hub_repo(cfg: dict) -> tuple[str, str | None] | None:
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        return None
    repo, _, revision = str(hub_id).partition("@")
    return repo, revision or None


def _url_cache_path(cfg: dict) -> Path | None:
    url = cfg.get("url")
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path) if url else None


def _hub_files(cfg: dict) -> tuple[str, ...]:
    return (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HF_FILES


def cached_file(cfg: dict) -> Path | None:
    """The weights file already on this machine: the Hugging Face cache, then torch hub's."""
    hub = _hub_repo(cfg)
    if hub is not None:
        from huggingface_hub import try_to_load_from_cache

        for filename in _hub_files(cfg):
            found = try_to_load_from_cache(hub[0], filename, revision=hub[1])
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    path = _url_cache_path(cfg)
    return path if path is not None and path.is_file() else None


def _missing_weights(name: str, tag: str, cfg: dict, why: str) -> UserError:
    from huggingface_hub import constants

    where = []
    hub = _hub_repo(cfg)
    if hub is not None:
        where.append(f"`hf download {hub[0]}` (https://huggingface.co/{hub[0]}) into the Hugging Face cache "
                     f"{constants.HF_HUB_CACHE} (or set HF_HOME)")
    path = _url_cache_path(cfg)
    if path is not None:
        where.append(f"download {cfg['url']} to {path} (or set TORCH_HOME)")
    get = " or ".join(where) or "get them"
    return UserError(f"pretrained weights timm {name}.{tag} are not available ({why}) — {get}, or pass "
                     f"model.weights_path=/path/to/{_hub_files(cfg)[0] if hub else 'weights.pth'}, or train "
                     "from scratch with model.pretrained=false.")


def _download(cfg: dict) -> Path:
    hub = _hub_repo(cfg)
    if hub is not None:
        from huggingface_hub import hf_hub_download

        files = _hub_files(cfg)
        for i, filename in enumerate(files):
            try:
                return Path(hf_hub_download(hub[0], filename, revision=hub[1]))
            except Exception:  # noqa: BLE001 — the repo may hold the other file; the last error is reported
                if i == len(files) - 1 and not cfg.get("url"):
                    raise
    path = _url_cache_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(cfg["url"], str(path), progress=True)
    return path


def pretrained_state(name: str, tag: str, cfg: dict, weights_path: str | None) -> tuple[dict, str]:
    """(state_dict, where it came from): ``weights_path``, the caches, or a download."""
    if weights_path:
        path = Path(os.path.expanduser(str(weights_path)))
        return read_state_dict(path), str(path)
    if not (cfg.get("hf_hub_id") or cfg.get("url")):
        raise UserError(f"timm has no download for {name}.{tag} — pass model.weights_path=FILE, or use "
                        "model.weights=null.")
    cached = cached_file(cfg)
    if cached is not None:
        return read_state_dict(cached, option="the cached weights file"), str(cached)
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        raise _missing_weights(name, tag, cfg, f"{OFFLINE_ENV} is set, so nothing is downloaded")
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            path = _download(cfg)
    except Exception as err:  # noqa: BLE001 — network, HTTP and hub errors of every kind
        raise _missing_weights(name, tag, cfg, f"the download failed: {type(err).__name__}: "
                               f"{_first_line(err, 100)}") from None
    return read_state_dict(path, option="the downloaded weights file"), str(path)


def build_network(name: str, weights: str | None, pretrained: bool, weights_path: str | None,
                  size: int | None = None) -> nn.Module:
    """timm's ``name`` with the resolved weights (random init when ``weights`` is null or
    ``pretrained`` is false), built for size×size where it fixes its image size."""
    tag = resolve_tag(check_name(name), weights, strict=pretrained and weights is not None)
    if weights_path and not (pretrained and tag is not None):
        raise UserError(f"model.weights_path={weights_path} is set but model.weights=null or "
                        "model.pretrained=false — drop one of them (weights_path loads pretrained weights).")
    if not (pretrained and tag is not None):
        return construct(name, weights, size)
    construct(name, weights, size, device="meta")  # a size it refuses: one line, before any file is read
    cfg = pretrained_cfg(name, tag)
    state, source = pretrained_state(name, tag, cfg, weights_path)
    try:
        net = timm.create_model(f"{name}.{tag}", pretrained=True, pretrained_cfg_overlay={"state_dict": state},
                                **_size_kwargs(cfg, size))
    except (RuntimeError, KeyError, ValueError, AssertionError, IndexError) as err:
        raise UserError(f"the weights in {source} do not fit timm's {name} ({_first_line(err)}) — pass a "
                        f"state_dict of {name} (timm's key names).") from None
    log.info("Pretrained weights timm %s.%s from %s", name, tag, source)
    return net

"""Where the configs live and how a config is composed outside the CLI (tests, benchmarks)."""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf


def config_dir() -> str:
    """The conf/ directory: inside the installed package (wheel) or at the repo top level."""
    packaged = Path(__file__).parents[1] / "conf"
    if packaged.is_dir():
        return str(packaged)
    checkout = Path(__file__).resolve().parents[3] / "conf"
    if checkout.is_dir():
        return str(checkout)
    raise RuntimeError("facecls configs not found: reinstall the package (pip install -e .)")


_RUN_ID = secrets.token_hex(3)


def register_resolvers() -> None:
    """OmegaConf resolvers the configs use. Safe to call more than once."""

    # A short random id per process, so two runs started in the same second never share a
    # run dir. use_cache keeps it identical wherever the config resolves it again (Hydra
    # copies the cache into each multirun job's config).
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", lambda: _RUN_ID, use_cache=True)


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """The config `facecls <command> OVERRIDES` would run with (same conf/ and defaults list),
    without a Hydra run dir: for tests and benchmarks that call the library directly."""

    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides or []))


def config_keys(conf_dir: str, config_name: str, overrides: list[str]) -> dict | None:
    """The key tree (nested dicts, other values None) of what ``config_name`` + ``overrides``
    compose to; None when they do not compose. The CLI's key pre-check needs only the keys, and
    composing the train config costs 0.3–0.8 s (Hydra composes it twice more to run it), so the
    tree is kept on disk for as long as no file under conf/ changes."""
    cache = _keys_cache_file(conf_dir, config_name, overrides)
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=list(overrides))
    except Exception:  # let Hydra report whatever stops composition, as it would anyway
        return None
    tree = _keys(OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False))
    try:  # atomically: a concurrent run reads the old file or the new one (config/ imports no facecls.io)
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(tree, f)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only cache dir: compose every time
    return tree


def _keys(node) -> dict | None:
    return {str(k): _keys(v) for k, v in node.items()} if isinstance(node, dict) else None


def _keys_cache_file(conf_dir: str, config_name: str, overrides: list[str]) -> Path:
    conf = Path(conf_dir)
    state = sorted((str(p.relative_to(conf)), p.stat().st_mtime_ns, p.stat().st_size)
                   for p in conf.rglob("*") if p.is_file())
    digest = hashlib.sha256(json.dumps([str(conf), state, config_name, list(overrides)]).encode()).hexdigest()
    root = os.environ.get("FACECLS_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "facecls")
    return Path(root) / "config-keys" / f"{digest[:32]}.json"

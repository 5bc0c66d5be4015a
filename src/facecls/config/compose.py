"""Where the configs live and how a config is composed outside the CLI (tests, benchmarks)."""
from __future__ import annotations

import secrets
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

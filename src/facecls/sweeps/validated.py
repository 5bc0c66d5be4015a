"""Each job of a sweep is composed once, not twice.

Hydra's sweepers first compose every job's config to fail early on a bad override
(``Sweeper.validate_batch_is_legal``), then the launcher composes each job again to run it:
≈0.3 s per job here, twice. Both call ``ConfigLoader.load_sweep_config(master, overrides)``;
:func:`reuse_validated_configs` makes the second call hand over the config the first one
composed (each is used once, so nothing accumulates), after copying the master config's
resolver cache into it again, as Hydra does: the launcher reads ``${now:…}`` of the sweep dir
*after* the validation, and a job must see the same values.
"""
from __future__ import annotations

from collections import defaultdict

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

_composed: dict[tuple, list] = defaultdict(list)  # (master config id, overrides) → configs not yet run


def reuse_validated_configs() -> None:
    """Patch Hydra (once per process): a job composed for validation is not composed again when
    it is launched."""
    if getattr(ConfigLoaderImpl, "_facecls_compose", None) is not None:
        return
    compose = ConfigLoaderImpl._facecls_compose = ConfigLoaderImpl.load_sweep_config

    def validate_batch_is_legal(self, batch) -> None:  # Hydra's, keeping what it composes
        context = getattr(self, "hydra_context", None)
        loader = context.config_loader if context is not None else self.config_loader
        for overrides in batch:
            config = compose(loader, self.config, list(overrides))
            _composed[(id(self.config), tuple(overrides))].append(config)

    def load_sweep_config(self, master_config, sweep_overrides):
        waiting = _composed.get((id(master_config), tuple(sweep_overrides)))
        if not waiting:
            return compose(self, master_config, sweep_overrides)
        config = waiting.pop(0)
        if not waiting:
            del _composed[(id(master_config), tuple(sweep_overrides))]
        OmegaConf.copy_cache(from_config=master_config, to_config=config)
        return config

    Sweeper.validate_batch_is_legal = validate_batch_is_legal
    ConfigLoaderImpl.load_sweep_config = load_sweep_config

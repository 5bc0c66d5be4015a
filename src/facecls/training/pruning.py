"""Optuna pruning for a trial of ``hparams_search=…`` (-m): each epoch's monitored validation
score is reported to the study, and the run stops (as early stopping does: best.pt, the test
score and metrics.json are written as usual) when the study's pruner — ``pruner`` in the
search's config, the median pruner by default — says the trial cannot catch up.

Only active inside a Optuna sweep whose jobs carry ``optuna_trial=<number>``
(facecls.sweeps.optuna_trials.number_trials); every other run keeps its plain EarlyStopping.
"""
from __future__ import annotations

import logging

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from facecls.config.instantiate import instantiate
from facecls.training.loop_types import EarlyStopping

log = logging.getLogger(__name__)

PRUNED_ATTR = "facecls_pruned_at_epoch"  # the same name facecls.sweeps.optuna_trials reads


class PruningStopper(EarlyStopping):
    """EarlyStopping that also reports each epoch to an Optuna trial and stops when it is pruned."""

    def __init__(self, base: EarlyStopping, trial):
        super().__init__(base.monitor, base.patience, base.min_delta)
        self.trial, self.pruned_at = trial, None

    def step(self, epoch: int, score: float) -> bool:
        improved = super().step(epoch, score)
        self.trial.report(float(self.sign * score), epoch)  # the study maximises: val_loss reported negated
        if self.trial.should_prune():
            self.pruned_at = epoch
            self.trial.set_user_attr(PRUNED_ATTR, epoch)
            log.info("Optuna pruned trial %d after epoch %d (%s %.4f) — stopping", self.trial.number, epoch,
                     self.monitor, score)
        return improved

    @property
    def should_stop(self) -> bool:
        return self.pruned_at is not None or super().should_stop


def with_pruning(cfg: DictConfig, stopper: EarlyStopping) -> EarlyStopping:
    """``stopper`` wrapped in a :class:`PruningStopper` when this run is a trial of an Optuna sweep
    with a SQLite study (conf/hparams_search) and a ``pruner``; else ``stopper`` itself."""
    number = cfg.get("optuna_trial")
    pruner_cfg = cfg.get("pruner")
    if number is None or not pruner_cfg or not HydraConfig.initialized():
        return stopper
    import optuna  # the sweep extra; only a trial of an Optuna search gets here

    sweeper = HydraConfig.get().sweeper
    storage_cfg = OmegaConf.to_container(sweeper.storage, resolve=True)
    storage = instantiate({**storage_cfg, "sweeper": False}, what="hydra.sweeper.storage")
    study = optuna.load_study(study_name=sweeper.study_name, storage=storage,
                              pruner=instantiate(pruner_cfg, what="pruner"))
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, int(number))
    return PruningStopper(stopper, optuna.trial.Trial(study, trial_id))

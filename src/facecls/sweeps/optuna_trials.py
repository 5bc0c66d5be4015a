"""The Optuna study of a search, kept in the sweep dir while it runs: a SQLite database
(``optuna.db``: a killed search resumes with the same ``hydra.sweeper.study_name``), every
trial in ``optuna_trials.csv`` the moment it finishes, and the best trial so far as
``best_trial.yaml``, a ready conf/experiment file.

hydra-optuna-sweeper 1.3.0 needs optuna 2.x, whose SQLite storage fails under SQLAlchemy 2:
its schema version check stamps alembic's revision on a connection that SQLAlchemy 2 never
commits (no autocommit), so the stamp is lost ("assert version is not None") and the open
transaction keeps the database locked for the next write. :class:`TrialRecordingStorage`
runs those three alembic calls in committed, closed connections; the rest of optuna's
RDBStorage works unchanged.

Pruning: each trial's job learns its trial number from the ``optuna_trial`` override (added by
:func:`number_trials`, the sweeper's ``custom_search_space``), reports each epoch's validation
score to the study and stops when the pruner says so (facecls.training.pruning); the trial is
then recorded as PRUNED instead of COMPLETE.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import alembic.migration
import optuna
import yaml
from optuna.distributions import IntUniformDistribution
from optuna.storages._rdb import storage as rdb
from optuna.trial import TrialState

from facecls.io import atomic_write_text, csv_text

log = logging.getLogger(__name__)

TRIAL_KEY = "optuna_trial"        # the job's override that names its trial (not a hyperparameter)
PRUNED_ATTR = "facecls_pruned_at_epoch"  # set by a job its pruner stopped


def _cell(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def trials_csv(trials: list[optuna.trial.FrozenTrial]) -> str:
    """Every trial as CSV: number, job (its run dir under the sweep dir), state, value,
    seconds, then one column per parameter."""
    params = list(dict.fromkeys(name for t in trials for name in t.params if name != TRIAL_KEY))

    def row(t) -> list:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        return [t.number, str(t.number), t.state.name, _cell(t.value), _cell(seconds),
                *(_cell(t.params.get(p)) for p in params)]

    return csv_text(["number", "job", "state", "value", "seconds", *params], map(row, trials))


class _CommittingVersionManager(rdb._VersionManager):
    """optuna 2.x's schema bookkeeping with its alembic connections committed and closed
    (SQLAlchemy 2 has no autocommit; see the module docstring)."""

    def _init_alembic(self) -> None:
        logging.getLogger("alembic").setLevel(logging.WARN)
        if self.get_current_version_or_none() is None:
            self._set_alembic_revision(self.get_head_version() if self._is_alembic_supported()
                                       else self._get_base_version())

    def _set_alembic_revision(self, revision: str) -> None:
        with self.engine.begin() as connection:
            alembic.migration.MigrationContext.configure(connection).stamp(self._create_alembic_script(), revision)

    def get_current_version_or_none(self) -> str | None:
        with self.engine.connect() as connection:
            return alembic.migration.MigrationContext.configure(connection).get_current_revision()

    def get_current_version(self) -> str:
        version = self.get_current_version_or_none()
        assert version is not None
        return version


@contextlib.contextmanager
def _committing_version_manager():
    original, rdb._VersionManager = rdb._VersionManager, _CommittingVersionManager
    try:
        yield
    finally:
        rdb._VersionManager = original


class TrialRecordingStorage(optuna.storages.RDBStorage):
    """Optuna's SQLite storage (``url``, in the sweep dir) that rewrites ``out_file`` (every trial)
    and ``best_file`` (the best trial as a conf/experiment yaml) whenever a trial finishes, and
    records a trial its job pruned as PRUNED. ``best_defaults`` go into the best trial's
    ``defaults`` list (the config groups the search space needs, e.g. reg). The sweeper's
    instance marks trials a killed session left RUNNING as FAIL (``sweeper=True``)."""

    def __init__(self, url: str, out_file: str, best_file: str | None = None, best_defaults: list | None = None,
                 sweeper: bool = True) -> None:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        with _committing_version_manager():
            super().__init__(url, engine_kwargs={"connect_args": {"timeout": 60}})
        self.out_file = Path(out_file)
        self.best_file = Path(best_file) if best_file else None
        self.best_defaults = list(best_defaults or [])
        if sweeper:
            self._fail_stale_trials()

    def __repr__(self) -> str:  # the sweeper logs its storage
        return f"{self.url} (every trial also written to {self.out_file})"

    def _fail_stale_trials(self) -> None:
        """A resumed search: trials its killed session left RUNNING will never report — FAIL them."""
        for study in self.get_all_study_summaries():
            for trial in self.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                super().set_trial_state(trial._trial_id, TrialState.FAIL)
                log.info("trial %d of study %s was left running by an earlier session: marked FAIL",
                         trial.number, study.study_name)

    def _final_state(self, trial_id: int, state: TrialState | None) -> TrialState | None:
        """COMPLETE → PRUNED for a trial its job stopped on the pruner's word (the job set the attr)."""
        if state == TrialState.COMPLETE and PRUNED_ATTR in self.get_trial(trial_id).user_attrs:
            return TrialState.PRUNED
        return state

    def _record(self, trial_id: int) -> None:
        study_id = self.get_study_id_from_trial_id(trial_id)
        trials = self.get_all_trials(study_id, deepcopy=False)
        atomic_write_text(self.out_file, trials_csv(trials))
        if self.best_file is not None:
            self._write_best(study_id, trials)

    def set_trial_state(self, trial_id: int, state: TrialState) -> bool:
        state = self._final_state(trial_id, state)
        changed = super().set_trial_state(trial_id, state)
        if state.is_finished():
            self._record(trial_id)
        return changed

    def _update_trial(self, trial_id: int, state: TrialState | None = None, **updates) -> bool:
        # optuna wraps an RDBStorage in its _CachedStorage, which ends a trial through here
        state = self._final_state(trial_id, state)
        changed = super()._update_trial(trial_id, state=state, **updates)
        if state is not None and state.is_finished():
            self._record(trial_id)
        return changed

    def _write_best(self, study_id: int, trials: list) -> None:
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        if not complete:
            return
        maximize = self.get_study_directions(study_id)[0] == optuna.study.StudyDirection.MAXIMIZE
        best = (max if maximize else min)(complete, key=lambda t: t.value)
        name = self.get_study_name_from_id(study_id)
        atomic_write_text(self.best_file, best_trial_yaml(best, name, self.best_defaults))


def best_trial_yaml(trial: optuna.trial.FrozenTrial, study_name: str, defaults: list) -> str:
    """The trial's parameters as a conf/experiment file (``# @package _global_``, nested keys)."""
    config: dict = {}
    for key, value in trial.params.items():
        if key == TRIAL_KEY:
            continue
        if isinstance(value, str):  # choice([16,32], …) values arrive as their override text
            with contextlib.suppress(yaml.YAMLError):
                value = yaml.safe_load(value)
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    head = (f"# @package _global_\n# The best trial ({trial.number}, objective {trial.value:.4f}) of Optuna study "
            f"{study_name}. Copy it to conf/experiment/<name>.yaml and train with:\n"
            f"#   facecls train experiment=<name>\n")
    body = {"defaults": defaults} if defaults else {}
    body.update(config)
    return head + yaml.safe_dump(body, sort_keys=False, default_flow_style=None)


def number_trials(config, trial: optuna.trial.Trial) -> None:
    """The sweeper's ``custom_search_space``: every trial also gets ``optuna_trial=<its number>``, so
    its job can report to it (pruning) and its run dir is named after it (hydra.sweep.subdir), also
    in a resumed search whose job numbers start again at 0."""
    trial._suggest(TRIAL_KEY, IntUniformDistribution(trial.number, trial.number))

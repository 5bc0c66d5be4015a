"""Keep a record of an Optuna study in the sweep dir while it runs.

hydra-optuna-sweeper writes only the best parameters (``optimization_results.yaml``) and
only when the study ends. facecls hands the sweeper this storage instead of a plain
in-memory one (conf/hparams_search/*.yaml: ``hydra.sweeper.storage._target_``), so every
trial is also written to ``optuna_trials.csv`` the moment it finishes — one row per trial
with its state, objective value and parameters. In-memory on purpose: the sweeper's SQL
storage fails under SQLAlchemy 2 (sqlite storage of optuna 2.x).
"""
from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.trial import TrialState

from facecls.io import atomic_write_text, csv_text


def _cell(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def trials_csv(trials: list[optuna.trial.FrozenTrial]) -> str:
    """Every trial as CSV: number, job (its run dir under the sweep dir), state, value,
    seconds, then one column per parameter."""
    params = list(dict.fromkeys(name for t in trials for name in t.params))

    def row(t) -> list:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        return [t.number, str(t.number), t.state.name, _cell(t.value), _cell(seconds),
                *(_cell(t.params.get(p)) for p in params)]

    return csv_text(["number", "job", "state", "value", "seconds", *params], map(row, trials))


class TrialRecordingStorage(optuna.storages.InMemoryStorage):
    """Optuna's in-memory storage that rewrites ``out_file`` whenever a trial finishes.

    (The sweeper numbers its jobs in the order it asks for trials, so trial ``n`` ran in
    ``<sweep dir>/n``.)"""

    def __init__(self, out_file: str) -> None:
        super().__init__()
        self.out_file = Path(out_file)

    def __repr__(self) -> str:  # the sweeper logs its storage
        return f"in memory (every trial written to {self.out_file})"

    def set_trial_state(self, trial_id: int, state: TrialState) -> bool:
        changed = super().set_trial_state(trial_id, state)
        if state.is_finished():
            study_id = self.get_study_id_from_trial_id(trial_id)
            atomic_write_text(self.out_file, trials_csv(self.get_all_trials(study_id, deepcopy=False)))
        return changed

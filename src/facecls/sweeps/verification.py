"""Verification folds as runs, so `facecls summarize … compare_metric=verif_acc` compares face
verification exactly as it compares classification.

`facecls verify` writes ``verify.json`` into a run dir with one accuracy per fold (each fold's
threshold fitted on the other folds). For the summary each fold becomes a record of its own:
``verif_acc`` is that fold's accuracy, ``verify.fold`` its number and ``verify.pairs`` a digest of
the pairs — both averaged over, like ``seed`` and ``data.split.fold``. A configuration then shows
mean ± std and a 95% CI over folds (and seeds), and ``compare=loss:cross_entropy`` pairs two
configurations fold by fold, on the same pairs only (runs verified on other pairs never pair).
The run's own metrics (test_acc, …) stay on the record of its first fold, so they still count
once per run.
"""
from __future__ import annotations

import copy
import json

from facecls.sweeps.runs import RunRecord

VERIFY_METRICS = ("verif_acc",)
FOLD_KEY = "verify.fold"
PAIRS_KEY = "verify.pairs"
AVERAGE_OVER = (FOLD_KEY, PAIRS_KEY)


def read_verify(run: RunRecord) -> dict | None:
    """The run's verify.json with its per-fold accuracies, or None."""
    path = run.path / "verify.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    folds = data.get("fold_accuracies") if isinstance(data, dict) else None
    return data if isinstance(folds, list) and folds else None


def expand_verify_folds(runs: list[RunRecord]) -> list[RunRecord]:
    """Each run with a verify.json → one record per verification fold (see the module docstring);
    runs without one are kept as they are."""
    expanded = []
    for run in runs:
        verify = read_verify(run)
        if verify is None:
            expanded.append(run)
            continue
        pairs = str(verify.get("pairs_digest") or verify.get("pairs") or "")
        for fold, accuracy in enumerate(verify["fold_accuracies"]):
            record = copy.copy(run)
            record.overrides = {**run.overrides, FOLD_KEY: fold, PAIRS_KEY: pairs}
            base = dict(run.metrics or {}) if fold == 0 else {"stop_reason": (run.metrics or {}).get("stop_reason")}
            record.metrics = {**base, "verif_acc": float(accuracy)}
            record.history = run.history if fold == 0 else []
            record.name = f"{run.name} [verify fold {fold + 1}]"
            expanded.append(record)
    return expanded

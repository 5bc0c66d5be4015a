"""LFW View 1: one fold of pairs (``pairsDevTest.txt``), with the threshold fitted on another file
(``pairsDevTrain.txt``, ``verify.threshold_pairs=``) — never on the pairs it scores.

Without a second file there is no held-out threshold, so no accuracy is reported (ROC AUC, EER and
TAR@FAR need no threshold and are); verify.json says why.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from facecls.faces.verification import STD_KIND, accuracy_at, best_threshold, eer, roc, tar_at_far


def fitted_threshold(scores: Any, same: Any, source: str) -> tuple[float, str]:
    """The most accurate threshold on the development pairs, and the rule that says so."""
    return best_threshold(scores, same), f"maximises accuracy on the pairs of {source} (View 1: fitted elsewhere)"


def one_fold_report(scores: Any, same: Any, *, fars: Sequence[float], fitted: tuple[float, str] | None) -> dict:
    """verify.json's fields for a single fold (see the module docstring)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(same, dtype=bool)
    taf = tar_at_far(s, y, fars)
    threshold, rule = fitted if fitted else (None, "no threshold: one fold and no verify.threshold_pairs= to fit it on")
    accuracy = accuracy_at(s, y, threshold) if threshold is not None else None
    return {
        "n_pairs": int(len(s)), "n_same": int(y.sum()), "n_different": int((~y).sum()), "n_folds": 1,
        "accuracy_mean": accuracy, "accuracy_std": None, "accuracy_stderr": None, "accuracy_std_kind": STD_KIND,
        "fold_accuracies": [] if accuracy is None else [accuracy],
        "fold_thresholds": [] if threshold is None else [threshold],
        "roc_auc": roc(s, y).auc, "eer": eer(s, y), "tar_at_far": taf.results, "far_left_out": taf.left_out,
        "threshold": threshold, "threshold_rule": f"same person when similarity > threshold; {rule}", "far": None,
    }

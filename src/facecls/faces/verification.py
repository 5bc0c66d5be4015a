"""The face-verification protocol (LFW View 2 style) over precomputed pair similarities.

Input is three aligned 1-D arrays, numpy or torch: ``scores`` (cosine similarity of each pair),
``same`` (True when both photos show one person) and ``folds`` (the fold id of each pair).
A pair is declared "same person" when its score is strictly above the threshold.

Why the fold loop matters: the threshold is a fitted parameter. LFW's protocol picks it on the
other k-1 folds and scores only the held-out fold, so the reported accuracy is what a threshold
fitted on some people earns on others. Tuning on the scored fold reads higher and is not an
estimate of anything; :func:`kfold_accuracy` never looks at the scored fold's pairs.

Spread: LFW reports the mean over folds with σ the *sample* standard deviation over folds
(divided by k-1) and the standard error S_E = σ/√k; both are returned and named, since many
codebases print σ and call it the error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from facecls.errors import UserError
from facecls.inference.model_info import far_key

DEFAULT_FARS: tuple[float, ...] = (1e-1, 1e-2, 1e-3)
STD_KIND = "sample standard deviation over folds (ddof=1, LFW's sigma); stderr = std / sqrt(k)"


@dataclass(frozen=True)
class KFoldResult:
    """Per-fold accuracy of the k-fold protocol; ``thresholds[i]`` was fitted without fold ``folds[i]``."""

    folds: list[int]
    accuracies: list[float]
    thresholds: list[float]
    mean: float
    std: float      # sample standard deviation over folds (ddof=1)
    stderr: float   # std / sqrt(k)


@dataclass(frozen=True)
class Roc:
    """ROC points from (0, 0) to (1, 1); point i accepts pairs with score >= ``thresholds[i]``."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    auc: float


@dataclass(frozen=True)
class TarAtFar:
    """TAR per supported FAR (keys like ``"1e-03"``) and the FARs left out, each with its reason."""

    results: dict[str, dict[str, float]]
    left_out: list[dict[str, Any]]


def _numpy(values: Any) -> np.ndarray:
    # Torch tensors may require grad or live on a GPU, where np.asarray fails; duck-typed so this
    # module stays importable (and fast to import) without torch.
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _pairs(scores: Any, same: Any, folds: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validated float64 scores, bool labels (and int folds), all 1-D and of one length."""
    s = _numpy(scores).astype(np.float64).reshape(-1)
    y = _numpy(same).astype(bool).reshape(-1)
    f = None if folds is None else _numpy(folds).astype(np.int64).reshape(-1)
    if len(s) != len(y) or (f is not None and len(f) != len(s)):
        raise ValueError(f"scores, same and folds must have one length, got {len(s)}, {len(y)}, "
                         f"{None if f is None else len(f)}")
    if len(s) == 0:
        raise UserError("there are no pairs to verify — give a pairs file with pairs in it, or more test images.")
    if not np.all(np.isfinite(s)):
        raise UserError(f"{int(np.sum(~np.isfinite(s)))} similarity scores are NaN or infinite — the model gives "
                        "non-finite embeddings (a diverged run?); verify another checkpoint.")
    return s, y, f


def _need_both_kinds(y: np.ndarray) -> None:
    if y.all() or not y.any():
        kind = "different-person" if y.all() else "same-person"
        raise UserError(f"the pairs have no {kind} pairs — ROC, EER and TAR need both kinds; use balanced pairs.")


def accuracy_at(scores: Any, same: Any, threshold: float) -> float:
    """Fraction of pairs decided right when "same" means score > ``threshold``."""
    s, y, _ = _pairs(scores, same)
    return float(np.mean((s > threshold) == y))


def best_threshold(scores: Any, same: Any) -> float:
    """The threshold that maximises accuracy on these pairs.

    Candidates are the midpoints between consecutive distinct scores, plus one below the lowest
    (everything "same") and one above the highest (everything "different"): every distinct
    decision is among them. Ties go to the lowest threshold, so the result is deterministic.
    """
    s, y, _ = _pairs(scores, same)
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    distinct, first = np.unique(s_sorted, return_index=True)
    end = np.r_[first[1:], len(s)]            # one past the last pair with each distinct score
    same_le = np.r_[0, np.cumsum(y_sorted)[end - 1]]  # same pairs at or below candidate c's cut
    diff_le = np.r_[0, end] - same_le
    correct = (int(y.sum()) - same_le) + diff_le      # same above the cut + different at or below it
    candidates = np.r_[distinct[0] - 1.0, (distinct[:-1] + distinct[1:]) / 2.0, distinct[-1] + 1.0]
    return float(candidates[int(np.argmax(correct))])


def kfold_accuracy(scores: Any, same: Any, folds: Any) -> KFoldResult:
    """The k-fold protocol: each fold is scored with the threshold best on the *other* folds.

    Raises UserError when there are fewer than two folds (a threshold fitted on the pairs it
    scores would be the only option, and that is exactly what the protocol forbids).
    """
    s, y, f = _pairs(scores, same, folds)
    assert f is not None
    ids = np.unique(f)
    if len(ids) < 2:
        raise UserError(f"the pairs form {len(ids)} fold — the k-fold protocol needs at least 2 (LFW uses 10); "
                        "use a View 2 pairs.txt or pairs=auto with verify.folds >= 2.")
    accuracies, thresholds = [], []
    for fold in ids:
        scored = f == fold
        threshold = best_threshold(s[~scored], y[~scored])  # fitted on the other folds only
        thresholds.append(threshold)
        accuracies.append(float(np.mean((s[scored] > threshold) == y[scored])))
    std = float(np.std(accuracies, ddof=1))
    return KFoldResult(folds=[int(i) for i in ids], accuracies=accuracies, thresholds=thresholds,
                       mean=float(np.mean(accuracies)), std=std, stderr=std / math.sqrt(len(ids)))


def roc(scores: Any, same: Any) -> Roc:
    """False-accept rate vs true-accept rate over every distinct threshold, and the trapezoid AUC."""
    s, y, _ = _pairs(scores, same)
    _need_both_kinds(y)
    order = np.argsort(-s, kind="stable")
    s_desc, y_desc = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s_desc))[0], len(s) - 1]  # last pair of each run of equal scores
    tp, fp = np.cumsum(y_desc)[last], np.cumsum(~y_desc)[last]
    tar = np.r_[0.0, tp / y.sum()]
    far = np.r_[0.0, fp / (~y).sum()]
    auc = float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))
    return Roc(far=far, tar=tar, thresholds=np.r_[np.inf, s_desc[last]], auc=auc)


def eer(scores: Any, same: Any) -> float:
    """Equal error rate: where FAR = FRR (1 - TAR), linearly interpolated between ROC points."""
    curve = roc(scores, same)
    gap = curve.far - (1.0 - curve.tar)  # -1 at (0, 0), +1 at (1, 1), non-decreasing in between
    i = int(np.argmax(gap >= 0))
    if i == 0 or gap[i] == 0:
        return float(curve.far[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(curve.far[i - 1] + t * (curve.far[i] - curve.far[i - 1]))


def pairs_needed(far: float) -> int:
    """Different-person pairs a FAR needs to be measurable at all: one false accept must be <= FAR."""
    return math.ceil(1.0 / far - 1e-9)


def _check_far(far: float, n_different: int) -> None:
    if not 0.0 < far <= 1.0:
        raise UserError(f"far={far} is not a rate — give a false-accept rate in (0, 1], e.g. far=1e-3.")
    if n_different < pairs_needed(far):
        raise UserError(f"far={far:g} needs at least {pairs_needed(far)} different-person pairs, the pairs have "
                        f"{n_different} — choose a larger far or use more pairs.")


def threshold_at_far(scores: Any, same: Any, far: float) -> float:
    """The lowest threshold whose false-accept rate on these pairs is at most ``far``.

    With n different-person pairs, at most k = floor(far * n) may score above it, so it is the
    (k+1)-th highest different-person score. Raises UserError when n < ceil(1/far).
    """
    s, y, _ = _pairs(scores, same)
    _need_both_kinds(y)
    different = np.sort(s[~y])[::-1]
    _check_far(far, len(different))
    k = math.floor(far * len(different) + 1e-9)
    return float(different[k]) if k < len(different) else float(different[-1] - 1.0)


def tar_at_far(scores: Any, same: Any, fars: Sequence[float] = DEFAULT_FARS) -> TarAtFar:
    """TAR and threshold at each FAR the different-person pairs support (>= ceil(1/FAR) of them)."""
    s, y, _ = _pairs(scores, same)
    _need_both_kinds(y)
    n_different = int((~y).sum())
    results: dict[str, dict[str, float]] = {}
    left_out: list[dict[str, Any]] = []
    for far in fars:
        if n_different < pairs_needed(far):
            left_out.append({"far": float(far), "reason": f"needs at least {pairs_needed(far)} different-person "
                                                          f"pairs, there are {n_different}"})
            continue
        threshold = threshold_at_far(s, y, far)
        results[far_key(far)] = {"tar": float(np.mean(s[y] > threshold)), "threshold": threshold,
                                 "far_achieved": float(np.mean(s[~y] > threshold))}
    return TarAtFar(results=results, left_out=left_out)


def verification_report(scores: Any, same: Any, folds: Any, *, fars: Sequence[float] = DEFAULT_FARS,
                        far: float | None = None) -> dict[str, Any]:
    """Everything ``verify.json`` holds, as plain JSON types.

    Args:
        scores, same, folds: one entry per pair (see the module docstring).
        fars: the FARs at which TAR is reported; those the pairs cannot support are listed in
            ``far_left_out`` with the reason.
        far: when given, ``threshold`` is the one for this FAR on all pairs (for deployment);
            otherwise the accuracy-maximising threshold on all pairs.
    """
    s, y, f = _pairs(scores, same, folds)
    _need_both_kinds(y)
    kfold = kfold_accuracy(s, y, f)
    taf = tar_at_far(s, y, fars)
    if far is None:
        threshold, rule = best_threshold(s, y), "maximises accuracy on all pairs"
    else:
        threshold, rule = threshold_at_far(s, y, far), f"FAR <= {far:g} on all pairs"
    return {
        "n_pairs": int(len(s)), "n_same": int(y.sum()), "n_different": int((~y).sum()), "n_folds": len(kfold.folds),
        "accuracy_mean": kfold.mean, "accuracy_std": kfold.std, "accuracy_stderr": kfold.stderr,
        "accuracy_std_kind": STD_KIND,
        "fold_accuracies": kfold.accuracies, "fold_thresholds": kfold.thresholds,
        "roc_auc": roc(s, y).auc, "eer": eer(s, y),
        "tar_at_far": taf.results, "far_left_out": taf.left_out,
        "threshold": threshold, "threshold_rule": f"same person when similarity > threshold; {rule}",
        "far": None if far is None else float(far),
    }

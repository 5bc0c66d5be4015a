"""The report's open-set section: verify every run of the loss sweep on people it never saw, then
compare the losses — k-fold accuracy ± std (and standard error), ROC AUC, EER, TAR@FAR, one ROC
overlay, and the paired difference of each loss from cross-entropy fold by fold (the same pairs
for every run: pairs=auto with one seed over the same identity-disjoint test people).

Each verification is `facecls verify ckpt=… pairs=auto out=…` (re-used when the report runs again);
its verify.json is copied into the run dir, where `facecls summarize … compare_metric=verif_acc`
finds it.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from facecls.faces.figures import roc_overlay
from facecls.faces.verification import roc
from facecls.report.runner import run_once
from facecls.report.sections import Figure
from facecls.sweeps.compare import compare_groups, comparison_table
from facecls.sweeps.runs import read_run
from facecls.sweeps.summary import write_summary
from facecls.sweeps.table import markdown_table

REFERENCE = "loss:cross_entropy"


def _scores(path: Path) -> tuple[list[float], list[bool]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [float(r["score"]) for r in rows], [r["same"] == "1" for r in rows]


def _row(label: str, v: dict, fars: list[str]) -> list[str]:
    tars = [f"{v['tar_at_far'][k]['tar']:.3f}" if k in v["tar_at_far"] else "–" for k in fars]
    return [label, f"{v['accuracy_mean']:.3f} ± {v['accuracy_std']:.3f}", f"{v['accuracy_stderr']:.3f}",
            str(v["n_folds"]), str(v["n_pairs"]), f"{v['roc_auc']:.3f}", f"{v['eer']:.3f}", *tars]


def verify_runs(section, result: dict, out: Path, logs: Path, overrides: list[str]) -> None:
    """Verify each run of ``result["runs"]``; put the comparison into ``result`` (lines, figures,
    notes) for report.md."""
    run_dirs = sorted({p.parent for p in result["runs"].rglob("metrics.json")})
    found: dict[str, dict] = {}
    curves = {}
    for run_dir in run_dirs:
        ckpt = run_dir / "checkpoints" / "best.pt"
        if not ckpt.is_file():
            continue
        target = out / section.id / run_dir.name
        outcome = run_once(["verify", f"ckpt={ckpt}", "pairs=auto", f"out={target}", *overrides], target, logs)
        if not outcome.ok:
            result["notes"].append(f"`facecls verify` of run {run_dir.name} failed: {outcome.message}")
            continue
        shutil.copy(target / "verify.json", run_dir / "verify.json")
        label = f"loss={read_run(run_dir, sweep_finished=True).setting('loss')}"
        found[label] = json.loads((target / "verify.json").read_text(encoding="utf-8"))
        scores, same = _scores(target / "pair_scores.csv")
        curve = roc(scores, same)
        curves[label] = (curve.far, curve.tar)
    if not found:
        return
    fars = sorted({k for v in found.values() for k in v["tar_at_far"]}, key=float, reverse=True)
    header = ["run", "accuracy ± std", "std. error", "folds", "pairs", "ROC AUC", "EER",
              *(f"TAR@FAR {k}" for k in fars)]
    lines = ["Verification of people no run saw in training (identity-disjoint test split, `pairs=auto`; each fold's "
             "threshold fitted on the other folds). ± is the standard deviation over folds; the standard error is "
             "std/√folds.", "", markdown_table(header, [_row(k, v, fars) for k, v in found.items()]), ""]
    if len(found) > 1:
        summary, _ = write_summary([result["runs"]], out=out / section.id, compare=REFERENCE,
                                   compare_metric="verif_acc", plots=False, sweep_finished=True)
        comparisons = compare_groups(summary, REFERENCE, "verif_acc")
        if comparisons:
            lines += ["Paired difference from cross-entropy features, fold by fold on the same pairs "
                      "(`facecls summarize … compare=loss:cross_entropy compare_metric=verif_acc`):", "",
                      markdown_table(*comparison_table(comparisons)), ""]
    result["lines"] = lines
    overlay = roc_overlay(curves, out / section.id / "roc_overlay.png", title="ROC on unseen people")
    result["figures"].append((Figure("", "ROC of every loss on the same pairs of unseen people", [],
                                     "roc_overlay.png"), [overlay], []))

"""`facecls summarize`: rows, groups, mean ± std over seeds, statuses and figures, on run
dirs written by the test (finished, diverged, failed, interrupted and running runs)."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from facecls.cli import leading_args_as_list
from facecls.errors import UserError
from facecls.sweeps.runs import read_runs
from facecls.sweeps.summary import write_summary
from facecls.sweeps.table import summarize_runs

from helpers import read_csv, run_cli

HISTORY_HEADER = "epoch,lr,train_loss,train_acc,val_loss,val_acc,seconds\n"


def make_run(sweep: Path, job: str, overrides: list[str], metrics: dict | None = None,
             val_accs: list[float] = (), log: str = "", choices: dict | None = None,
             config: dict | None = None) -> Path:
    """A run dir as `facecls train` leaves it (only the files summarize reads)."""
    run = sweep / job
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if choices is not None:
        (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    if config is not None:
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    if val_accs:
        rows = "".join(f"{e},0.001,1.0,0.5,1.0,{a},0.1\n" for e, a in enumerate(val_accs, start=1))
        (run / "history.csv").write_text(HISTORY_HEADER + rows)
    (run / "train.log").write_text(log)
    return run


def finished(test_acc: float, val_acc: float, stop_reason: str = "max_epochs", epochs: int = 3) -> dict:
    return {"best_epoch": epochs, "best_val_acc": val_acc, "test_acc": test_acc, "epochs_run": epochs,
            "stop_reason": stop_reason, "wall_seconds": 10.0}


@pytest.fixture
def sweep(tmp_path) -> Path:
    """reg=none,dropout × seed=0,1,2 (+ a 4th dropout seed still running) where dropout
    seed 1 diverged and dropout seed 2 failed with a UserError."""
    root = tmp_path / "multirun" / "12-00-00_abcdef"
    const = ["trainer.max_epochs=3"]
    for job, (seed, test, val) in enumerate([(0, 0.80, 0.70), (1, 0.82, 0.75), (2, 0.84, 0.80)]):
        make_run(root, str(job), [*const, "reg=none", f"seed={seed}"], finished(test, val), [0.5, 0.6, val])
    make_run(root, "3", [*const, "reg=dropout", "seed=0"], finished(0.90, 0.85, "early_stopping"), [0.6, 0.85])
    make_run(root, "4", [*const, "reg=dropout", "seed=1"], finished(0.50, 0.40, "diverged", epochs=1), [0.4],
             log="[..][ERROR] facecls: error: training diverged (non-finite loss) in epoch 2\n")
    make_run(root, "5", [*const, "reg=dropout", "seed=2"],
             log="[2024-01-01 12:00:00][ERROR] facecls: error: optim.lr=-1 is invalid — use > 0.\n")
    make_run(root, "10", [*const, "reg=dropout", "seed=3"], val_accs=[0.3])  # just written: running
    return root


def test_rows_groups_means_and_statuses(sweep):
    runs = read_runs([sweep])
    assert [r.name for r in runs] == ["0", "1", "2", "3", "4", "5", "10"]  # natural order: 10 last
    assert [r.status for r in runs] == ["max_epochs"] * 3 + ["early_stopping", "diverged", "failed", "running"]
    assert runs[5].note == "optim.lr=-1 is invalid — use > 0."

    summary = summarize_runs(runs)
    assert summary.group_keys == ["reg"] and summary.averaged_over == ["seed"]
    assert summary.constant == {"trainer.max_epochs": 3}
    none, dropout = summary.groups
    assert none.label == "reg=none" and dropout.label == "reg=dropout"
    acc = none.stat("test_acc")
    assert acc.n == 3 and acc.mean == pytest.approx(0.82) and acc.std == pytest.approx(0.02)
    # Finished runs are averaged (the diverged one too: it is this configuration's result);
    # the failed and the running one are listed but have no numbers to average.
    acc = dropout.stat("test_acc")
    assert acc.n == 2 and acc.mean == pytest.approx(0.70) and acc.std == pytest.approx(math.sqrt(0.08))
    assert dropout.problems == "1 diverged, 1 failed, 1 running"
    assert len(dropout.runs) == 4


def test_written_files(sweep, tmp_path):
    summary, text = write_summary([sweep], sweep_finished=False)

    rows = read_csv(sweep / "summary.csv")
    assert [r["run"] for r in rows] == ["0", "1", "2", "3", "4", "5", "10"]
    assert rows[0]["reg"] == "none" and rows[0]["seed"] == "0" and rows[0]["trainer.max_epochs"] == "3"
    assert float(rows[1]["test_acc"]) == pytest.approx(0.82)
    assert rows[5]["status"] == "failed" and rows[5]["test_acc"] == "" and "optim.lr=-1" in rows[5]["note"]

    groups = read_csv(sweep / "summary_groups.csv")
    assert [g["reg"] for g in groups] == ["none", "dropout"]
    assert float(groups[0]["test_acc_mean"]) == pytest.approx(0.82)
    assert float(groups[0]["test_acc_std"]) == pytest.approx(0.02)
    assert groups[1]["test_acc_n"] == "2" and groups[1]["runs"] == "4"

    markdown = (sweep / "summary.md").read_text()
    assert "| none | 3 | 0.820 ± 0.020 | 0.750 ± 0.050 |" in markdown
    assert "- 5: failed — optim.lr=-1 is invalid" in markdown
    assert "0.820 ± 0.020" in text and "5: failed" in text  # the terminal table

    for name in ("summary.png", "curves_overlay.png"):
        with Image.open(sweep / name) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 150


def test_finished_sweep_and_stale_runs_are_incomplete_not_running(sweep):
    stale = sweep / "10"
    old = time.time() - 3600
    for f in stale.rglob("*"):
        os.utime(f, (old, old))
    assert read_runs([stale])[0].status == "incomplete"  # no write for an hour
    fresh = read_runs([sweep], sweep_finished=True)
    assert fresh[-1].status == "incomplete"  # the sweep is over: nobody is writing it


def test_runs_of_different_sweeps_compare_by_their_config(tmp_path, sweep):
    # A run launched without these overrides ran with the default choice reg=none and the
    # configured trainer.max_epochs=3: it belongs with the reg=none runs of the sweep.
    make_run(tmp_path / "single", "run", ["seed=5"], finished(0.86, 0.80), choices={"reg": "none"},
             config={"trainer": {"max_epochs": 3}, "seed": 5})
    summary = summarize_runs(read_runs([sweep, tmp_path / "single"]))
    none = next(g for g in summary.groups if g.label == "reg=none")
    assert len(none.runs) == 4 and none.stat("test_acc").mean == pytest.approx(0.83)


def test_sort_puts_the_best_configuration_first(sweep):
    summary = summarize_runs(read_runs([sweep]), sort="test_acc")
    assert [g.label for g in summary.groups] == ["reg=none", "reg=dropout"]  # 0.82 > 0.70
    only_seeds = summarize_runs(read_runs([sweep]), average_over=())
    assert len(only_seeds.groups) == 7  # seed is a configuration key now


def test_user_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no run dirs under"):
        write_summary([tmp_path])
    with pytest.raises(UserError, match="is not a folder"):
        write_summary([tmp_path / "nope"])
    with pytest.raises(UserError, match="sort=loss"):
        write_summary([tmp_path], sort="loss")


def test_positional_dirs_become_one_list_override():
    assert leading_args_as_list(["a", "b c", "sort=test_acc"], "dirs") == ["dirs=['a','b c']", "sort=test_acc"]
    assert leading_args_as_list(["it's"], "dirs") == ["dirs=['it\\'s']"]
    assert leading_args_as_list(["--cfg", "job"], "dirs") == ["--cfg", "job"]


def test_cli(sweep, tmp_path, cache_env):
    other = make_run(tmp_path / "other sweep", "0", ["trainer.max_epochs=3", "reg=none", "seed=9"],
                     finished(0.88, 0.8))
    out = tmp_path / "report"
    proc = run_cli("summarize", str(sweep), str(other.parent), f"out={out}", "sort=test_acc",
                   cwd=tmp_path, env=cache_env)
    assert "reg" in proc.stdout and "0.835 ± 0.034" in proc.stdout  # none: 0.80, 0.82, 0.84, 0.88
    assert sorted(p.name for p in out.iterdir()) == ["curves_overlay.png", "summary.csv", "summary.md",
                                                     "summary.png", "summary_groups.csv"]
    proc = run_cli("summarize", str(tmp_path / "missing"), cwd=tmp_path, env=cache_env, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("facecls: error: ") and "Traceback" not in proc.stderr

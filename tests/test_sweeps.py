"""Sweeps end to end: the joblib and submitit_local launchers, a failing and a crashing job
that do not stop the sweep, an Optuna search, SLURM settings, and unique run dirs.

The launcher and Optuna tests need the sweep extra (pip install -e ".[sweep]"); CI
installs it, so there they run.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import read_csv, read_json, run_cli

# One epoch on 16×16 images: a real run dir in a second or two.
FAST = ["model.input_size=16", "trainer.max_epochs=1", "trainer.batch_size=16", "trainer.progress=false"]
NEEDS_EXTRA = "the sweep extra is not installed (pip install -e '.[sweep]')"


def data_args(root: Path) -> list[str]:
    return ["data=imagefolder", f"data.root={root}"]


def the_sweep_dir(cwd: Path) -> Path:
    found = list((cwd / "outputs" / "multirun").glob("*/*"))
    assert len(found) == 1, found
    return found[0]


def job_overrides(job: Path) -> list[str]:
    return yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())


def summary_rows(sweep: Path) -> list[dict]:
    return read_csv(sweep / "summary.csv")


def test_joblib_sweep_runs_in_parallel_and_survives_a_failed_job(tiny_faces, tmp_path, cache_env):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason=NEEDS_EXTRA)
    proc = run_cli("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *data_args(tiny_faces),
                   *FAST, "optim.lr=0.001,-1", cwd=tmp_path, env=cache_env, check=False)
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout
    sweep = the_sweep_dir(tmp_path)
    assert re.fullmatch(r"\d\d-\d\d-\d\d_[0-9a-f]{6}", sweep.name)  # <time>_<random id>
    # Every job keeps the overrides it ran with.
    assert "optim.lr=0.001" in job_overrides(sweep / "0") and "optim.lr=-1" in job_overrides(sweep / "1")
    assert read_json(sweep / "0" / "metrics.json")["stop_reason"] == "max_epochs"
    assert not (sweep / "1" / "metrics.json").exists()
    # The job failed in a worker process; the summary at the end still knows, and so does
    # the exit status.
    rows = summary_rows(sweep)
    assert [(r["run"], r["status"]) for r in rows] == [("0", "max_epochs"), ("1", "failed")]
    assert "optim.lr=-1 is invalid" in rows[1]["note"]
    assert "Sweep summary" in proc.stdout and "1 failed" in proc.stdout
    assert proc.returncode == 1 and "1 job(s) failed" in proc.stderr


@pytest.mark.slow  # ~12 s; the joblib test above covers a failed job in a sweep by default
def test_submitit_sweep_survives_a_crashing_job(tiny_faces, tmp_path, cache_env):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason=NEEDS_EXTRA)
    proc = run_cli("train", "-m", "hydra/launcher=submitit_local", *data_args(tiny_faces), *FAST,
                   "optim._target_=torch.optim.NoSuchOptimizer,torch.optim.Adam",
                   cwd=tmp_path, env=cache_env, check=False)
    sweep = the_sweep_dir(tmp_path)
    assert (sweep / ".submitit").is_dir()
    # Job 0 raised a plain exception (a bug, not a UserError): its traceback is in its log,
    # job 1 still ran, and the summary marks job 0 as failed.
    assert "Traceback" in (sweep / "0" / "train.log").read_text()
    assert read_json(sweep / "1" / "metrics.json")["stop_reason"] == "max_epochs"
    rows = summary_rows(sweep)
    assert [r["status"] for r in rows] == ["failed", "max_epochs"]
    assert rows[0]["note"].startswith("InstantiationException: Error locating target 'torch.optim.NoSuchOptimizer'")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.slow  # an Optuna sweep of several trials (~15 s)
def test_optuna_search_writes_best_parameters_and_every_trial(tiny_faces, tmp_path, cache_env):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason=NEEDS_EXTRA)
    # Widths and kernel size are pinned on the command line: Optuna searches the rest.
    run_cli("train", "-m", "hparams_search=convnet_optuna", "hydra.sweeper.n_trials=3", *data_args(tiny_faces),
            *FAST, "model.channels=[8,16]", "model.kernel_size=3", cwd=tmp_path, env=cache_env)
    found = list((tmp_path / "outputs" / "optuna").glob("convnet_*"))  # the sweep dir is named after the study
    assert len(found) == 1, found
    sweep = found[0]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    # optuna_trial: each trial's number, handed to its job (pruning, run dir name)
    assert set(results["best_params"]) == {"optim.lr", "reg.weight_decay.value", "reg.dropout.p", "optuna_trial"}

    trials = read_csv(sweep / "optuna_trials.csv")
    assert [t["state"] for t in trials] == ["COMPLETE"] * 3
    scores = [read_json(sweep / t["job"] / "metrics.json")["best_val_acc"] for t in trials]
    assert [float(t["value"]) for t in trials] == pytest.approx(scores)  # objective = best val acc
    assert results["best_value"] == pytest.approx(max(scores))
    for t in trials:
        assert 1e-4 <= float(t["optim.lr"]) <= 1e-2
        assert f"optim.lr={t['optim.lr']}" in job_overrides(sweep / t["job"])
    best = trials[scores.index(max(scores))]
    assert results["best_params"]["optim.lr"] == pytest.approx(float(best["optim.lr"]))
    markdown = (sweep / "summary.md").read_text()
    assert "## Optuna" in markdown and "3 trials (3 complete)" in markdown


def test_slurm_settings_of_the_docs_compose():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason=NEEDS_EXTRA)
    from hydra import compose, initialize_config_dir

    from facecls.cli import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True, overrides=[
            "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1",
            "hydra.launcher.cpus_per_task=8", "hydra.launcher.timeout_min=120", "hydra.launcher.array_parallelism=8"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min, launcher.array_parallelism) == \
        ("gpu", 1, 120, 8)


def test_runs_started_together_get_their_own_dirs(tiny_faces, tmp_path, cache_env):
    # No time in the pattern: only the per-process random id can keep the two apart.
    command = [sys.executable, "-m", "facecls", "train", *data_args(tiny_faces), *FAST,
               "hydra.run.dir=runs/run_${uid:}"]
    jobs = [subprocess.Popen(command, cwd=tmp_path, env=cache_env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    for job in jobs:
        output, _ = job.communicate(timeout=300)
        assert job.returncode == 0, output[-3000:]
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(re.fullmatch(r"run_[0-9a-f]{6}", r.name) for r in runs)
    for run in runs:
        assert read_json(run / "metrics.json")["stop_reason"] == "max_epochs"
        assert job_overrides(run) == [*data_args(tiny_faces), *FAST]

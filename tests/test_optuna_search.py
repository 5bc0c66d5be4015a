"""The Optuna search that survives: the study in SQLite (optuna 2.x under SQLAlchemy 2), a job's
pruned trial recorded as PRUNED, the best trial as a conf/experiment yaml, and (slow) a real
search killed-and-resumed with its study name."""
from __future__ import annotations

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from facecls.sweeps.optuna_trials import TrialRecordingStorage, number_trials  # noqa: E402
from facecls.training.loop_types import EarlyStopping  # noqa: E402
from facecls.training.pruning import PruningStopper  # noqa: E402

from helpers import TINY, read_csv, run_cli  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::optuna.exceptions.ExperimentalWarning")


def storage(tmp_path, sweeper=True):
    return TrialRecordingStorage(f"sqlite:///{tmp_path / 'optuna.db'}", str(tmp_path / "trials.csv"),
                                 str(tmp_path / "best_trial.yaml"), ["override /reg: [dropout]"], sweeper=sweeper)


def test_sqlite_study_prunes_and_writes_the_best_trial(tmp_path):
    study = optuna.create_study(study_name="s", storage=storage(tmp_path), direction="maximize")
    lr = optuna.distributions.LogUniformDistribution(1e-4, 1e-1)
    for number, scores in enumerate([[0.5, 0.8, 0.9], [0.5, 0.7, 0.8]]):  # two trials run to the end
        trial = study.ask({"optim.lr": lr, "model.channels": optuna.distributions.CategoricalDistribution(
            ["[16,32]", "[32,64]"])})
        number_trials(None, trial)
        assert trial.params["optuna_trial"] == number
        for epoch, score in enumerate(scores, 1):
            trial.report(score, epoch)
        study.tell(trial, scores[-1])
    # a job in another process: its own storage object, the study's median pruner
    trial = study.ask({"optim.lr": lr})
    job_study = optuna.load_study(study_name="s", storage=storage(tmp_path, sweeper=False),
                                  pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    stopper = PruningStopper(EarlyStopping("val_acc"), optuna.trial.Trial(job_study, trial._trial_id))
    stopper.step(1, 0.6)
    assert not stopper.should_stop  # above the median of epoch 1 (0.5)
    stopper.step(2, 0.2)
    assert stopper.should_stop and stopper.pruned_at == 2  # below the median of epoch 2 (0.75)
    study.tell(trial, 0.6)  # the sweeper says COMPLETE with the job's return value …
    states = {t.number: t.state.name for t in optuna.load_study(study_name="s", storage=storage(tmp_path)).trials}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED"}  # … the storage records PRUNED
    assert [r["state"] for r in read_csv(tmp_path / "trials.csv")] == ["COMPLETE", "COMPLETE", "PRUNED"]
    best = yaml.safe_load((tmp_path / "best_trial.yaml").read_text())
    assert (tmp_path / "best_trial.yaml").read_text().startswith("# @package _global_")
    assert best["defaults"] == ["override /reg: [dropout]"] and "optuna_trial" not in best
    assert best["optim"]["lr"] == study.best_trial.params["optim.lr"]
    assert best["model"]["channels"] in ([16, 32], [32, 64])  # the override text became a list


def test_a_trial_left_running_by_a_killed_search_is_failed_on_resume(tmp_path):
    study = optuna.create_study(study_name="s", storage=storage(tmp_path), direction="maximize")
    study.ask()  # the search was killed while this trial ran
    resumed = optuna.create_study(study_name="s", storage=storage(tmp_path), load_if_exists=True,
                                  direction="maximize")
    assert [t.state.name for t in resumed.trials] == ["FAIL"]


@pytest.mark.slow  # a 3-trial search, then 1 more trial resumed (~60 s on two cores)
def test_search_resumes_with_its_study_name(tmp_path, tiny_faces, cache_env):
    common = ["train", "-m", "hparams_search=convnet_optuna", "data=imagefolder", f"data.root={tiny_faces}", *TINY,
              "model.input_size=32",  # the search space has 3 conv layers of kernel 7
              "hydra.sweeper.study_name=tiny", "pruner.n_startup_trials=1", "hydra.sweeper.sampler.n_startup_trials=2"]
    run_cli(*common, "hydra.sweeper.n_trials=3", cwd=tmp_path, env=cache_env)
    sweep = tmp_path / "outputs" / "optuna" / "tiny"
    assert (sweep / "optuna.db").is_file() and (sweep / "best_trial.yaml").is_file()
    run_cli(*common, "hydra.sweeper.n_trials=1", cwd=tmp_path, env=cache_env)
    rows = read_csv(sweep / "optuna_trials.csv")
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"]
    assert all((sweep / r["number"] / "metrics.json").is_file() for r in rows)  # trial n ran in <sweep>/n
    best = yaml.safe_load((sweep / "best_trial.yaml").read_text())
    assert set(best) >= {"optim", "reg", "model"}

"""End-to-end `facecls train` / `facecls eval` runs on a tiny generated dataset."""
from __future__ import annotations

import pytest
from PIL import Image

from helpers import TINY, cli_env, finish_cli, read_history, read_json, run_cli, start_cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_faces):
    """Two runs of one command line (the same seed), each decoding into its own cache, started side
    by side: base/run (`trained`) and base/twin (test_same_seed_gives_identical_history)."""
    base = tmp_path_factory.mktemp("train")
    jobs = {name: start_cli("train", "data=imagefolder", f"data.root={tiny_faces}", *TINY,
                            f"hydra.run.dir={base / name}", cwd=base, env=cli_env(base / cache))
            for name, cache in (("run", "cache"), ("twin", "cache-twin"))}
    return base, {name: finish_cli(job) for name, job in jobs.items()}


@pytest.fixture(scope="module")
def trained(runs):
    """One 2-epoch ConvNet run shared by the tests below."""
    base, procs = runs
    return base / "run", cli_env(base / "cache"), procs["run"]


def test_train_writes_every_output_and_they_agree(trained):
    run_dir, _, proc = trained
    for name in ["train.log", "history.csv", "metrics.json", "curves.png", "confusion_matrix.png",
                 "checkpoints/best.pt", "checkpoints/last.pt", ".hydra/config.yaml", ".hydra/overrides.yaml"]:
        assert (run_dir / name).is_file(), name
    history = read_history(run_dir)
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert list(history[0]) == ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]
    metrics = read_json(run_dir / "metrics.json")
    val_accs = [float(r["val_acc"]) for r in history]
    assert metrics["best_val_acc"] == max(val_accs)
    assert metrics["best_epoch"] == val_accs.index(max(val_accs)) + 1
    assert metrics["epochs_run"] == 2 and metrics["stop_reason"] == "max_epochs"
    assert 0.0 <= metrics["test_acc"] <= 1.0 and metrics["test_loss"] > 0
    assert metrics["skipped_files"] == 0
    assert metrics["train_size"] + metrics["val_size"] + metrics["test_size"] == 36
    for png in ("curves.png", "confusion_matrix.png"):
        with Image.open(run_dir / png) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 200
    log = (run_dir / "train.log").read_text()
    assert "epoch 1/2" in log and "epoch 2/2" in log and "test_acc" in log


def test_eval_reproduces_test_accuracy(trained, tmp_path):
    run_dir, env, _ = trained
    run_cli("eval", f"ckpt={run_dir / 'checkpoints' / 'best.pt'}", cwd=tmp_path, env=env)
    scores = read_json(run_dir / "eval.json")
    metrics = read_json(run_dir / "metrics.json")
    assert scores["test_acc"] == metrics["test_acc"]
    assert scores["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)
    assert scores["val_acc"] == metrics["best_val_acc"]


def test_checkpoint_holds_plain_data(trained):
    import torch

    run_dir, _, _ = trained
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert best["format"] == "facecls-checkpoint/1"
    assert best["classes"] == sorted(best["classes"]) and len(best["classes"]) == 3
    assert best["config"]["model"]["input_size"] == 16
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["optimizer"] is not None


def test_same_seed_gives_identical_history(runs):
    base, _ = runs
    rows = [[{k: v for k, v in r.items() if k != "seconds"} for r in read_history(base / name)]
            for name in ("run", "twin")]
    assert rows[0] == rows[1]


def test_mlp_with_composed_regularisers(tmp_path, tiny_faces, cache_env):
    run_cli("train", "data=imagefolder", f"data.root={tiny_faces}", "model=mlp", "reg=[dropout,early_stopping]",
            "reg.early_stopping.patience=1", "optim=sgd", "sched=step", "sched.step_size=1", "trainer.max_epochs=4",
            "trainer.batch_size=16", "trainer.progress=false", f"hydra.run.dir={tmp_path / 'run'}",
            cwd=tmp_path, env=cache_env)
    config = (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    assert "_target_: facecls.models.mlp.MLP" in config and "p: 0.5" in config
    history = read_history(tmp_path / "run")
    lrs = [float(r["lr"]) for r in history]
    assert all(b == pytest.approx(a * 0.1) for a, b in zip(lrs, lrs[1:]))  # StepLR(step_size=1, gamma=0.1)


@pytest.mark.slow  # ~12 s; test_reliability's test_diverging_run_stops_cleanly_and_sweep_goes_on runs a -m sweep too
def test_multirun_makes_one_complete_dir_per_job(tmp_path, tiny_faces, cache_env):
    run_cli("train", "-m", "data=imagefolder", f"data.root={tiny_faces}", *TINY, "trainer.max_epochs=1",
            "reg=none,dropout", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, env=cache_env)
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    for job, reg in zip(jobs, ["none", "dropout"]):
        assert read_json(job / "metrics.json")["epochs_run"] == 1
        assert (job / "checkpoints" / "best.pt").is_file()
        assert f"reg={reg}" in (job / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow  # ~9 s; test_bad_inputs' test_messy_folder_trains_and_reports_every_skip checks the same and more
def test_skips_and_counts_unreadable_files(tmp_path, tiny_faces, cache_env):
    import shutil

    root = tmp_path / "faces"
    shutil.copytree(tiny_faces, root)
    first = sorted(p for p in root.iterdir())[0]
    (first / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (first / "notes.txt").write_text("hello")
    (first / ".DS_Store").write_bytes(b"\0\0")
    proc = run_cli("train", "data=imagefolder", f"data.root={root}", *TINY, "trainer.max_epochs=1",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=cache_env)
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["skipped_files"] == 2
    assert set(metrics["skipped"]) == {f"{first.name}/broken.jpg", f"{first.name}/notes.txt"}
    assert "Skipped 2 unreadable file(s)" in proc.stdout + proc.stderr

"""Interrupt and resume exactly, determinism, the NaN guard, atomic writes, safe loading."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import read_history, read_json, run_cli

# Deterministic and slow enough (many small batches) to be interrupted mid-run.
RESUMABLE = ["model.input_size=16", "trainer.batch_size=4", "trainer.max_epochs=12", "trainer.progress=false",
             "trainer.deterministic=true", "reg=[dropout,early_stopping]", "reg.early_stopping.patience=30",
             "sched=step", "sched.step_size=3", "seed=5"]
TIMING = ("seconds", "wall_seconds", "train_seconds", "train_images_per_second", "timing")  # timing: the phases


def history_without_time(run_dir):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_history(run_dir)]


def metrics_without_time(run_dir):
    return {k: v for k, v in read_json(run_dir / "metrics.json").items() if k not in TIMING}


def rows(run_dir):
    path = run_dir / "history.csv"
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


@pytest.mark.slow  # SIGINT + resume through the CLI (~20 s); test_fit covers exact resume in-process
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, tiny_faces, cache_env):
    """Ctrl-C after two epochs, then resume (SIGTERM takes the same path: see the GracefulStop test)."""
    data = ["data=imagefolder", f"data.root={tiny_faces}"]
    run_cli("train", *data, *RESUMABLE, f"hydra.run.dir={tmp_path / 'full'}", cwd=tmp_path, env=cache_env)

    part = tmp_path / "part"
    proc = subprocess.Popen([sys.executable, "-m", "facecls", "train", *data, *RESUMABLE, f"hydra.run.dir={part}"],
                            cwd=tmp_path, env=cache_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while rows(part) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "facecls train resume=" in err and "Traceback" not in err
    assert read_json(part / "metrics.json")["stop_reason"] == "interrupted"
    finished = rows(part)
    assert 2 <= finished < 12
    assert torch.load(part / "checkpoints" / "last.pt", weights_only=True)["epoch"] == finished

    run_cli("train", f"resume={part}", cwd=tmp_path, env=cache_env)
    assert history_without_time(part) == history_without_time(tmp_path / "full")
    assert metrics_without_time(part) == metrics_without_time(tmp_path / "full")
    assert "Resuming from" in (part / "train.log").read_text()


def test_resume_auto_finds_the_unfinished_run(tmp_path, tiny_faces, cache_env):
    data = ["data=imagefolder", f"data.root={tiny_faces}", "model.input_size=16", "trainer.progress=false"]
    run_cli("train", *data, "trainer.max_epochs=1", cwd=tmp_path, env=cache_env)
    (run_dir,) = [p.parent for p in (tmp_path / "outputs").rglob("metrics.json")]
    metrics = read_json(run_dir / "metrics.json")
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "stop_reason": "interrupted"}))
    proc = run_cli("train", *data, "trainer.max_epochs=1", "resume=auto", cwd=tmp_path, env=cache_env)
    assert f"resuming {run_dir.resolve()}" in proc.stdout
    assert read_json(run_dir / "metrics.json")["stop_reason"] == "max_epochs"
    assert len(list((tmp_path / "outputs").rglob("metrics.json"))) == 1  # no new run dir


@pytest.mark.slow  # three CLI runs (~13 s)
def test_resume_with_another_model_names_the_mismatch(tmp_path, tiny_faces, cache_env):
    run_cli("train", "data=imagefolder", f"data.root={tiny_faces}", "model.input_size=16", "trainer.max_epochs=1",
            "trainer.progress=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=cache_env)
    proc = run_cli("train", f"resume={tmp_path / 'run'}", "model.channels=[8,8]", "trainer.max_epochs=2",
                   cwd=tmp_path, env=cache_env, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1
    assert "do not fit this model" in lines[0] and "features.0.weight" in lines[0]


def test_diverging_run_stops_cleanly_and_sweep_goes_on(tmp_path, tiny_faces, cache_env):
    # The LR explodes after epoch 1 (StepLR gamma 1e20): epoch 3 diverges, best.pt stays intact.
    proc = run_cli("train", "-m", "data=imagefolder", f"data.root={tiny_faces}", "model.input_size=16",
                   "trainer.progress=false", "trainer.max_epochs=3", "optim=sgd", "sched=step",
                   "sched.step_size=1", "sched.gamma=1e20,0.5", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                   cwd=tmp_path, env=cache_env, check=False)
    diverged, healthy = read_json(tmp_path / "sweep/0/metrics.json"), read_json(tmp_path / "sweep/1/metrics.json")
    assert diverged["stop_reason"] == "diverged" and diverged["epochs_run"] == 2
    assert diverged["test_acc"] is not None
    best = torch.load(tmp_path / "sweep/0/checkpoints/best.pt", weights_only=True)
    assert best["epoch"] == diverged["best_epoch"] and all(torch.isfinite(v).all() for v in best["model"].values())
    assert healthy["stop_reason"] == "max_epochs" and healthy["epochs_run"] == 3
    assert "lower optim.lr" in (tmp_path / "sweep/0/train.log").read_text()
    assert "Traceback" not in proc.stderr


def test_single_diverging_run_exits_with_one_line(tmp_path, tiny_faces, cache_env):
    proc = run_cli("train", "data=imagefolder", f"data.root={tiny_faces}", "model.input_size=16",
                   "trainer.progress=false", "optim.lr=1e30", f"hydra.run.dir={tmp_path / 'run'}",
                   cwd=tmp_path, env=cache_env, check=False)
    assert proc.returncode == 3
    assert proc.stderr.strip().startswith("facecls: error: training diverged") and "optim.lr" in proc.stderr
    assert read_json(tmp_path / "run" / "metrics.json")["stop_reason"] == "diverged"


def test_atomic_write_keeps_the_old_file_when_the_disk_is_full(tmp_path):
    from facecls.io import atomic_write, atomic_write_json

    target = atomic_write_json(tmp_path / "metrics.json", {"ok": 1})

    def fill_disk(f):
        f.write(b'{"half": ')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, fill_disk)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temp file left behind


def test_checkpoint_that_runs_code_is_refused(tmp_path, cache_env):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "facecls-checkpoint/1", "model": Evil()}, tmp_path / "evil.pt")
    proc = run_cli("eval", f"ckpt={tmp_path / 'evil.pt'}", cwd=tmp_path, env=cache_env, check=False)
    assert proc.returncode == 2 and not marker.exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "was not loaded" in lines[0]


def test_graceful_stop_sets_a_flag_then_aborts(monkeypatch):
    from facecls.training.interrupt import GracefulStop

    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

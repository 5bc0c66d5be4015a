"""What a run dir promises after any way out, kill -9 included: checkpoints/last.pt is at most
one finished epoch behind history.csv, even when an epoch is shorter than one checkpoint write
(the ConvNet at 64 px: ~50 MB of weights + Adam state, one batch per epoch), and the temp
file of a killed write is gone when the same run dir starts again."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from facecls.timing import CLOCK
from facecls.training.checkpoint import CheckpointWriter
from facecls.training.engine import fit
from facecls.training.outputs import RunRecorder
from facecls.training.run import build_run, run_training

from helpers import read_history, run_cli

BIG = ["model.input_size=64", "trainer.batch_size=64", "trainer.progress=false", "trainer.amp=false"]


def saved_epoch(path: Path) -> int:
    """The epoch a checkpoint holds (0 when there is none), read without loading its tensors' data."""
    if not path.is_file():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])


class WatchedWriter(CheckpointWriter):
    """The real writer, looking at the run dir each time the recorder hands it an epoch: history.csv
    has that epoch's row by then, so this is what a kill -9 right after the row was written leaves."""

    seen: list[tuple[int, int]]  # (rows in history.csv, epoch of last.pt)

    def epoch_finished(self, result, improved):
        run_dir = self.ckpt_dir.parent
        self.seen.append((len(read_history(run_dir)), saved_epoch(self.ckpt_dir / "last.pt")))
        super().epoch_finished(result, improved)


def test_last_pt_is_never_more_than_one_epoch_behind_history(compose_train, tmp_path):
    cfg = compose_train(*BIG, "trainer.max_epochs=4")
    run = build_run(cfg, tmp_path)
    run.checkpoints.__class__, run.checkpoints.seen = WatchedWriter, []  # the run's own writer, watched
    try:
        fit(run.trained, run.data, run.prepare, run.optimizer, run.scheduler, run.stopper, run.settings,
            RunRecorder(tmp_path, run.checkpoints))
    finally:
        run.checkpoints.close()
    seen = run.checkpoints.seen
    assert [rows for rows, _ in seen] == [1, 2, 3, 4]
    assert all(rows - last <= 1 for rows, last in seen), seen
    assert saved_epoch(tmp_path / "checkpoints" / "last.pt") == 4


def test_every_n_epochs_and_the_last_finished_epoch(compose_train, tmp_path):
    cfg = compose_train("trainer.max_epochs=3", "trainer.checkpoint.every_n_epochs=2")
    run = build_run(cfg, tmp_path)
    try:
        run.fit(tmp_path)  # flushes the skipped last epoch on the way out
        assert saved_epoch(tmp_path / "checkpoints" / "last.pt") == 3
    finally:
        run.checkpoints.close()
    stale = tmp_path / "checkpoints" / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    nolast = build_run(compose_train("trainer.max_epochs=1", "trainer.checkpoint.last=false"), tmp_path / "b")
    again = build_run(cfg, tmp_path)  # the same run dir starts again: the killed write's temp file goes
    assert not stale.exists()
    assert nolast.checkpoints.write_last is False and again.checkpoints.every_n_epochs == 2
    nolast.checkpoints.close()
    again.checkpoints.close()


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_auto(tiny_faces, tmp_path, cache_env):
    """Whole processes: kill -9 at a random moment of a run whose epochs are shorter than one
    checkpoint write; `resume=auto` continues from at most one epoch back and finishes the run."""
    args = ["train", "data=imagefolder", f"data.root={tiny_faces}", *BIG, "trainer.max_epochs=6"]
    rng = random.Random()
    proc = subprocess.Popen([sys.executable, "-m", "facecls", *args], cwd=tmp_path, env=cache_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wanted = rng.randint(1, 4)
    deadline = time.monotonic() + 240
    run_dir = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((tmp_path / "outputs").rglob("history.csv"))
        if found and len(read_history(found[0].parent)) >= wanted:
            run_dir = found[0].parent
            break
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run_dir is not None, "the run ended before it was killed"
    rows = len(read_history(run_dir))
    last = saved_epoch(run_dir / "checkpoints" / "last.pt")
    assert rows - last <= 1, f"killed with {rows} rows in history.csv, last.pt holds epoch {last}"
    if last == 0:
        return  # killed within the first epoch's write: resume=auto (rightly) starts a new run
    resumed = run_cli(*args, "resume=auto", cwd=tmp_path, env=cache_env)
    assert f"(epoch {last} finished)" in resumed.stdout + resumed.stderr
    assert [int(r["epoch"]) for r in read_history(run_dir)] == [1, 2, 3, 4, 5, 6]
    assert not list((run_dir / "checkpoints").glob("*.tmp"))


def test_metrics_json_books_every_phase(cfg_train, tmp_path):
    """metrics.json's ``timing``: the phases of the run in order, wall and CPU seconds (scripts/bench.py --phases)."""
    CLOCK.take()  # a new set: earlier tests of this process lapped it too
    timing = run_training(cfg_train, tmp_path)["timing"]
    phases = ["data", "model", "first_step", "epochs", "test", "figures", "checkpoint_wait"]
    assert [name for name in timing if name in phases] == phases
    assert all(timing[name] >= 0 and timing["cpu"][name] >= 0 for name in phases)
    assert timing["in_process"] >= sum(timing[name] for name in phases)

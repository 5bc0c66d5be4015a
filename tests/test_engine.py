"""The loop's pieces: early stopping on a scripted score sequence, the hash split."""
from __future__ import annotations

import resource
import sys

import pytest
import torch

from facecls.data.split import assign_splits, hash_fraction
from facecls.training.loop_types import EarlyStopping
from facecls.training.runtime import keep_freed_memory


def run_stopper(scores, **kwargs):
    stopper = EarlyStopping(**kwargs)
    for epoch, score in enumerate(scores, start=1):
        stopper.step(epoch, score)
        if stopper.should_stop:
            return epoch, stopper.best_epoch
    return None, stopper.best_epoch


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    scores = [0.1, 0.3, 0.5, 0.4, 0.5, 0.45, 0.2, 0.9]
    assert run_stopper(scores, monitor="val_acc", patience=3) == (6, 3)
    assert run_stopper(scores, monitor="val_acc", patience=5) == (None, 8)


def test_early_stopping_min_delta_and_loss_monitor():
    # improvements smaller than min_delta do not reset the counter
    assert run_stopper([0.5, 0.505, 0.509, 0.51], monitor="val_acc", patience=2, min_delta=0.01) == (3, 1)
    # val_loss: lower is better
    assert run_stopper([2.0, 1.5, 1.6, 1.7], monitor="val_loss", patience=2) == (4, 2)


def test_early_stopping_without_patience_only_tracks_best():
    assert run_stopper([0.3, 0.2, 0.1, 0.05], monitor="val_acc") == (None, 1)


def test_split_is_stable_when_files_are_added():
    files = [f"c{c}/img_{i:03d}.jpg" for c in range(3) for i in range(100)]
    before = dict(zip(files, assign_splits(files, 0.7, 0.15, 0.15, seed=0)))
    grown = files + [f"c{c}/new_{i:03d}.jpg" for c in range(3) for i in range(50)]
    after = dict(zip(grown, assign_splits(grown, 0.7, 0.15, 0.15, seed=0)))
    assert all(after[f] == before[f] for f in files)
    counts = {s: list(after.values()).count(s) for s in ("train", "val", "test")}
    assert sum(counts.values()) == len(grown)  # every file in exactly one split
    assert 0.6 < counts["train"] / len(grown) < 0.8


def test_split_depends_on_seed_and_is_uniform():
    files = [f"x/{i}.png" for i in range(2000)]
    assert assign_splits(files, 0.5, 0.25, 0.25, seed=0) != assign_splits(files, 0.5, 0.25, 0.25, seed=1)
    mean = sum(hash_fraction(f, 7) for f in files) / len(files)
    assert abs(mean - 0.5) < 0.03


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_keep_freed_memory_reuses_big_blocks_without_page_faults():
    """What fit does on a CPU: a 64 MB tensor allocated and freed at every step (as the
    ConvNet's FC weight gradient) is faulted in afresh each time by glibc's default
    (mmap/munmap: 16,384 faults of 4 KiB); kept, the steps after the first few reuse it."""
    assert not keep_freed_memory(torch.device("meta"))  # only the CPU's allocator is touched
    if not keep_freed_memory(torch.device("cpu")):
        pytest.skip("not glibc")

    def faults_of_one_step() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(16 * 2**20)  # 64 MB, freed at once
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults = [faults_of_one_step() for _ in range(16)]  # the heap settles in the first steps
    assert sum(faults[-4:]) < 2000, faults

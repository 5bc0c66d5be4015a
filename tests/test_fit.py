"""facecls.training.engine.fit called directly on tiny in-memory tensors (no files, no CLI):
the history it returns, what it reports each epoch, that it learns, and how it stops
(diverged, early stopping, interrupted) or resumes."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from facecls.data.batches import BatchPreparer
from facecls.data.dataset import DataBundle, Split
from facecls.data.preprocess import Preprocess
from facecls.models.convnet import ConvNet
from facecls.training.engine import fit
from facecls.training.loop_types import EarlyStopping, LoopSettings, ResumePoint

from helpers import read_history

CPU = torch.device("cpu")
PREP = Preprocess(size=8)
COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]


def split(n: int, generator: torch.Generator) -> Split:
    """n 3×8×8 uint8 images; class 1 = bright (≈190), class 0 = dark (≈65), with noise."""
    labels = torch.arange(n) % 2
    level = torch.where(labels == 1, 190, 65).view(n, 1, 1, 1)
    noise = torch.randint(-60, 61, (n, 3, 8, 8), generator=generator)
    return Split((level + noise).clamp(0, 255).to(torch.uint8), labels, [f"{i}.png" for i in range(n)])


def bright_or_dark(n_train: int = 32, n_val: int = 16) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    return DataBundle(train=split(n_train, g), val=split(n_val, g), test=split(8, g),
                      classes=["dark", "bright"], root=Path("."), preprocess=PREP)


def model(seed: int = 0) -> ConvNet:
    torch.manual_seed(seed)
    return ConvNet(num_classes=2, input_size=8, channels=[4], fc=[8])


def settings(max_epochs: int = 3, **kwargs) -> LoopSettings:
    return LoopSettings(device=CPU, max_epochs=max_epochs, batch_size=4, progress=False, **kwargs)


class Reporter:
    """Records what fit reports after each epoch (the result object is fit's own, so copy)."""

    def __init__(self):
        self.calls: list[dict] = []
        self.train_passes = 0  # told before each validation pass (the checkpoint snapshot starts then)

    def train_pass_finished(self) -> None:
        self.train_passes += 1

    def epoch_finished(self, result, improved: bool) -> None:
        self.calls.append({"epoch": result.history[-1]["epoch"], "rows": len(result.history),
                           "best_epoch": result.best_epoch, "improved": improved})


def train(net, data, max_epochs=3, lr=1e-3, stopper=None, reporter=None, optimizer=None, **kwargs):
    optimizer = optimizer or torch.optim.Adam(net.parameters(), lr=lr)
    return fit(net, data, BatchPreparer(PREP, CPU), optimizer, None, stopper or EarlyStopping(),
               settings(max_epochs), reporter=reporter, **kwargs)


def test_history_reporter_and_weights():
    net, reporter = model(), Reporter()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = train(net, bright_or_dark(), reporter=reporter)

    assert result.stop_reason == "max_epochs"
    assert [list(row) for row in result.history] == [COLUMNS] * 3
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    for row in result.history:
        assert row["lr"] == pytest.approx(1e-3)
        assert 0.0 <= row["train_acc"] <= 1.0 and 0.0 <= row["val_acc"] <= 1.0
        assert row["train_loss"] > 0 and row["val_loss"] > 0 and row["seconds"] > 0
    assert result.train_seconds > 0 and set(result.rng) >= {"torch", "order", "python", "numpy"}

    # One report per finished epoch, after its row was added; improved == a new best val_acc.
    assert [(c["epoch"], c["rows"]) for c in reporter.calls] == [(1, 1), (2, 2), (3, 3)]
    assert reporter.train_passes == 3
    best_so_far = -1.0
    for call, row in zip(reporter.calls, result.history):
        assert call["improved"] == (call["best_epoch"] == call["epoch"])
        assert call["improved"] == (row["val_acc"] > best_so_far)
        best_so_far = max(best_so_far, row["val_acc"])
    val_accs = [row["val_acc"] for row in result.history]
    assert result.best_epoch == val_accs.index(max(val_accs)) + 1 == reporter.calls[-1]["best_epoch"]

    after = net.state_dict()
    for key, value in before.items():
        assert not torch.equal(value, after[key]), f"{key} did not change"


def test_learns_bright_versus_dark():
    result = train(model(), bright_or_dark(), lr=3e-3)
    first, last = result.history[0], result.history[-1]
    assert last["train_acc"] > first["train_acc"]
    assert last["train_loss"] < first["train_loss"]
    assert last["val_acc"] >= 0.9


class NaNNet(nn.Module):
    """Its logits are NaN from the first batch."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


def test_nan_loss_stops_as_diverged_before_any_step():
    net, reporter = NaNNet(), Reporter()
    before = copy.deepcopy(net.state_dict())
    result = train(net, bright_or_dark(), reporter=reporter)
    assert result.stop_reason == "diverged"
    assert result.history == [] and reporter.calls == [] and result.best_epoch == 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # no step on a NaN loss


def test_huge_learning_rate_diverges():
    """lr=1e30: one SGD step makes every layer's weights ~1e30, so the logits overflow."""
    net = model()
    result = train(net, bright_or_dark(), optimizer=torch.optim.SGD(net.parameters(), lr=1e30))
    assert result.stop_reason == "diverged"
    assert len(result.history) < 3


@pytest.mark.parametrize("monitor", ["val_acc", "val_loss"])
def test_early_stopping_on_a_constant_score(monitor):
    """lr=0: the weights, so the validation score, never change; patience=1 stops after epoch 2."""
    stopper, reporter = EarlyStopping(monitor=monitor, patience=1), Reporter()
    result = train(model(), bright_or_dark(), max_epochs=5, lr=0.0, stopper=stopper, reporter=reporter)
    assert result.stop_reason == "early_stopping"
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert result.history[0][monitor] == result.history[1][monitor]
    assert result.best_epoch == 1 and [c["improved"] for c in reporter.calls] == [True, False]


def test_stop_request_drops_the_unfinished_epoch():
    class StopInSecondEpoch:
        """A GracefulStop stand-in: 'requested' once 10 batches ran (epoch 1 has 8)."""

        def __init__(self):
            self.checks = 0

        @property
        def requested(self):
            self.checks += 1
            return "SIGINT" if self.checks >= 10 else None

    reporter = Reporter()
    result = train(model(), bright_or_dark(), reporter=reporter, stop=StopInSecondEpoch())
    assert result.stop_reason == "interrupted"
    assert [row["epoch"] for row in result.history] == [1] and len(reporter.calls) == 1


def test_resume_continues_exactly_like_a_straight_run():
    data = bright_or_dark()
    straight = train(model(), data)

    net = model()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    stopper = EarlyStopping()
    first = train(net, data, max_epochs=2, optimizer=optimizer, stopper=stopper)
    saved = copy.deepcopy({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                           "stopper": stopper.state_dict(), "rng": first.rng})
    assert [row["epoch"] for row in first.history] == [1, 2]

    # A fresh process: different random state, new objects, the saved state loaded back.
    torch.manual_seed(12345)
    net = model(seed=99)
    net.load_state_dict(saved["model"])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    optimizer.load_state_dict(saved["optimizer"])
    stopper = EarlyStopping()
    stopper.load_state_dict(saved["stopper"])
    resumed = train(net, data, optimizer=optimizer, stopper=stopper,
                    resume=ResumePoint(epoch=2, history=first.history, rng=saved["rng"]))

    def untimed(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert untimed(resumed.history[:2]) == untimed(first.history)
    assert untimed(resumed.history) == untimed(straight.history)  # the third row included, bit for bit
    assert resumed.best_epoch == straight.best_epoch


def test_cfg_train_runs_in_process_and_history_csv_matches_fit(cfg_train, tmp_path):
    """The composed tiny `train` config through build_run: RunRecorder writes fit's history."""
    from facecls.training.run import build_run

    assert cfg_train.trainer.max_epochs == 2 and cfg_train.model.input_size == 16
    run_dir = tmp_path / "run"
    run = build_run(cfg_train, run_dir)
    result = run.fit(run_dir)
    assert result.stop_reason == "max_epochs" and len(result.history) == 2
    written = [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in read_history(run_dir)]
    assert written == result.history
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and (run_dir / "checkpoints" / "best.pt").is_file()

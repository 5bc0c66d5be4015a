"""The epoch log line shows the scores a run has: an identity-split run's val people are no training
classes (val_loss/val_acc are nan), so its line carries val_verif_acc and no nan fields."""
from __future__ import annotations

import logging

from facecls.training.engine import log_epoch
from facecls.training.loop_types import EarlyStopping


def test_an_identity_split_epoch_line_has_no_nan_and_shows_verification(caplog):
    row = {"epoch": 2, "train_loss": 1.5, "train_acc": 0.25, "val_loss": float("nan"), "val_acc": float("nan"),
           "val_verif_acc": 0.6123, "lr": 1e-3}
    with caplog.at_level(logging.INFO, logger="facecls.training.engine"):
        log_epoch(row, EarlyStopping("val_verif_acc"), True, 10)
        log_epoch({k: v for k, v in row.items() if k != "val_verif_acc"} | {"val_loss": 0.9, "val_acc": 0.5},
                  EarlyStopping(), False, 10)
    open_set, closed = (r.getMessage() for r in caplog.records)
    assert "nan" not in open_set and "val_verif_acc 0.6123" in open_set and "val_acc" not in open_set.replace(
        "val_verif_acc", "")
    assert open_set.startswith("epoch  2/10 train_loss 1.5000 train_acc 0.2500 val_verif_acc")
    assert "new best" in open_set
    assert "val_loss 0.9000 val_acc 0.5000 lr 1.00e-03" in closed

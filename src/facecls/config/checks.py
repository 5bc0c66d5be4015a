"""Names and range checks that several layers share, defined once (torch-free, so the CLI's
pre-checks and the library raise the same one-line errors)."""
from __future__ import annotations

from facecls.errors import UserError

SPLITS = ("train", "val", "test")
# what early stopping and the choice of best.pt may follow; val_verif_acc: open-set runs (margin loss or
# data.split.by=identity), the k-fold verification accuracy of pairs drawn from the val people
MONITORS = ("val_acc", "val_loss", "val_verif_acc")
SPLIT_BY = ("image", "identity")  # data.split.by: images of one person may share splits, or whole people do not


def check_dropout(p: float, key: str = "reg.dropout.p") -> float:
    """A dropout probability in [0, 1)."""
    if isinstance(p, bool) or not 0.0 <= float(p) < 1.0:
        raise UserError(f"{key}={p} is out of range — use 0 <= p < 1 (e.g. reg.dropout.p=0.5).")
    return float(p)


def check_monitor(monitor: str, key: str = "trainer.monitor") -> str:
    if monitor not in MONITORS:
        raise UserError(f"{key}={monitor} — use {' or '.join(MONITORS)}.")
    return monitor


def check_split(name: str, key: str = "split") -> str:
    if name not in SPLITS:
        raise UserError(f"{key}={name} is unknown — use one of: {', '.join(SPLITS)}.")
    return name


def check_ratios(train: float, val: float, test: float) -> None:
    ratios = {"train": train, "val": val, "test": test}
    bad = [k for k, v in ratios.items() if not 0 < v < 1]
    if bad:
        raise UserError(f"data.split.{bad[0]}={ratios[bad[0]]} is out of range — each split "
                        "ratio must be between 0 and 1 (e.g. 0.7/0.15/0.15).")
    if abs(train + val + test - 1) > 1e-6:
        raise UserError(f"data.split ratios sum to {train + val + test:g}, not 1 — e.g. "
                        "data.split.train=0.7 data.split.val=0.15 data.split.test=0.15.")

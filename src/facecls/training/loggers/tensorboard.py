"""TensorBoard (logger=tensorboard): event files in <run dir>/tb, so ``tensorboard --logdir outputs``
lists every run and sweep job. Per epoch loss/acc (train, val), lr and images/s; at the end the
test scores, the figures as images and the HParams dashboard (the run's overrides → its final
metrics), so a sweep can be sorted and filtered in the HParams tab."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from facecls.training.loggers.base import RunInfo, RunLogger, numeric_items, require

# history.csv column → TensorBoard tag
EPOCH_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "acc/train", "val_acc": "acc/val",
              "lr": "lr", "images_per_second": "images_per_second"}
# metrics.json keys shown in the HParams table (and as hparam/<key> scalars)
HPARAM_METRICS = ["best_val_acc", "best_val_loss", "test_acc", "test_loss", "epochs_run"]


class TensorBoardLogger(RunLogger):
    name = "tensorboard"

    def __init__(self, subdir: str = "tb"):
        require("tensorboard", "tensorboard", "tensorboard")
        self.subdir = subdir
        self.writer = None
        self.info: RunInfo | None = None
        self.last_epoch = 0

    def start(self, info: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run appends a new event file to the same folder: one run in TensorBoard.
        self.info = info
        self.writer = SummaryWriter(log_dir=str(info.run_dir / self.subdir))

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        for key, tag in EPOCH_TAGS.items():
            if key in metrics:
                self.writer.add_scalar(tag, metrics[key], global_step=epoch)
        self.last_epoch = epoch
        self.writer.flush()  # live: an open TensorBoard shows the epoch now

    def log_files(self, paths: list[Path]) -> None:

        for path in paths:
            if path.suffix == ".png":
                with Image.open(path) as im:
                    pixels = np.asarray(im.convert("RGB"))
                self.writer.add_image(f"figures/{path.stem}", pixels, global_step=self.last_epoch, dataformats="HWC")

    def log_final(self, metrics: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        numbers = numeric_items(metrics)
        for key in ("test_acc", "test_loss"):
            if key in numbers:
                self.writer.add_scalar(f"test/{key.removeprefix('test_')}", numbers[key], global_step=self.last_epoch)
        final = {f"hparam/{k}": numbers[k] for k in HPARAM_METRICS if k in numbers}
        # SummaryWriter.add_hparams would start a second run folder; writing the three hparams
        # summaries into this writer keeps the HParams row and the curves in one run.
        for summary in hparams(hparam_values(self.info.overrides), final):
            self.writer._get_file_writer().add_summary(summary)
        for tag, value in final.items():
            self.writer.add_scalar(tag, value, global_step=self.last_epoch)

    def finish(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def hparam_values(overrides: dict) -> dict:
    """The run's overrides as HParams values (numbers and bools kept, the rest as text)."""
    values = {}
    for key, value in overrides.items():
        values[key] = value if isinstance(value, (int, float, bool, str)) else str(value)
    return values or {"overrides": "none"}

"""The inspect commands' figures in the run's TensorBoard (`facecls visualize`, `robustness`, `eval`).

A run trained with logger=tensorboard has event files in ``<run>/tb`` (the logger's ``subdir``).
:func:`figures_to_tensorboard` wraps a command: every PNG it writes into its output folder is
added as an image to a new event file in that folder, tagged ``<command>/<file stem>`` at the
checkpoint's epoch, so TensorBoard's Images tab shows it beside the training figures. A run
without that folder is left alone; a missing tensorboard package or a failing write is a
logged skip — never a lost result.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from facecls.errors import one_line

log = logging.getLogger(__name__)


def tensorboard_dir(run) -> Path | None:
    """``<run>/<subdir>`` when the run has TensorBoard event files there, else None."""
    subdir = OmegaConf.select(run.config, "logger.tensorboard.subdir", default=None) or "tb"
    folder = Path(run.run_dir) / str(subdir)
    return folder if folder.is_dir() and any(folder.glob("events.out.tfevents.*")) else None


def _pngs(folder: Path) -> dict[Path, tuple[int, int]]:
    """Each PNG in ``folder`` with what changes when it is (re)written: (inode, mtime)."""
    found = {}
    for path in Path(folder).glob("*.png") if Path(folder).is_dir() else ():
        with contextlib.suppress(OSError):
            st = path.stat()
            found[path] = (st.st_ino, st.st_mtime_ns)
    return found


def add_images(folder: Path, paths: list[Path], command: str, step: int) -> list[str]:
    """Add each PNG of ``paths`` to a new event file in ``folder``; return the tags written."""
    from torch.utils.tensorboard import SummaryWriter

    tags = []
    writer = SummaryWriter(log_dir=str(folder))
    try:
        for path in paths:
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("RGB"))
            tag = f"{command}/{path.stem}"
            writer.add_image(tag, pixels, global_step=step, dataformats="HWC")
            tags.append(tag)
    finally:
        writer.close()
    return tags


@contextlib.contextmanager
def figures_to_tensorboard(run, out: Path, command: str):
    """Around a command that writes figures into ``out``: afterwards, add the PNGs it wrote
    (new or rewritten) to the run's TensorBoard, when the run has one."""
    before = _pngs(out)
    yield
    folder = tensorboard_dir(run)
    if folder is None:
        return
    written = sorted(p for p, state in _pngs(out).items() if before.get(p) != state)
    if not written:
        return
    try:
        tags = add_images(folder, written, command, int(run.checkpoint.epoch or 0))
    except ImportError:
        log.info("the run has TensorBoard files in %s but the tensorboard package is missing "
                 "(pip install 'facecls[tensorboard]'): figures not added there", folder)
    except Exception as err:  # a tracker never costs a result
        log.warning("could not add the figures to TensorBoard in %s: %s", folder, one_line(err))
    else:
        log.info("TensorBoard: added %s to %s", ", ".join(tags), folder)

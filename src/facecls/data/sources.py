"""Where images come from: a folder tree (yours, or the rendered synthetic faces).

A source returns an :class:`ImageList` — file paths, class names and labels — and never
decodes an image; decoding happens once, in :mod:`facecls.data.decode`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from facecls.config.checks import SPLITS
from facecls.data.synthetic import write_dataset
from facecls.errors import UserError

log = logging.getLogger(__name__)

# Files that operating systems drop into folders; never images, never worth a warning.
SYSTEM_FILES = {"thumbs.db", "desktop.ini", ".ds_store"}
LAYOUT_HINT = "expected root/<class>/<image> or root/{train,val,test}/<class>/<image>"


@dataclass
class ImageList:
    """Image files under ``root`` (relative POSIX paths) with their class labels."""

    root: Path
    classes: list[str]
    files: list[str]
    labels: list[int]
    # The split of each file when the folder layout fixes it (root/train/…), else None.
    fixed_splits: list[str] | None = None
    ignored: list[str] = field(default_factory=list)


def _visible(name: str) -> bool:
    return not name.startswith(".") and name.lower() not in SYSTEM_FILES


def _inside(path: Path, root: Path) -> bool:
    """A symlinked file is read only when it leads to a file inside the data root: a link to
    elsewhere would train on images the root does not hold (and leak them across splits)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a broken link or a loop
        return False


def _files_under(folder: Path, root: Path, ignored: list[str]) -> list[Path]:
    """Every visible regular file below ``folder``, sorted. Symlinked folders are not
    followed (a symlink loop cannot hang the scan, a link to ``..`` cannot pull in the parent);
    symlinked files only when they stay inside ``root``. What is left out goes to ``ignored``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        ignored += [(here / d).relative_to(root).as_posix() for d in dirnames if (here / d).is_symlink()]
        dirnames[:] = sorted(d for d in dirnames if _visible(d) and not (here / d).is_symlink())
        for name in sorted(filenames):
            path = here / name
            if not _visible(name):
                continue
            if path.is_symlink() and not _inside(path, root):
                ignored.append(path.relative_to(root).as_posix())
                continue
            found.append(path)
    return found


def _class_dirs(folder: Path, root: Path | None = None, ignored: list[str] | None = None) -> list[Path]:
    """The visible sub-folders of ``folder``; a symlinked one is ignored (listed in ``ignored``)."""
    dirs = sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p.name))
    if ignored is not None:
        ignored += [p.relative_to(root).as_posix() for p in dirs if p.is_symlink()]
    return [p for p in dirs if not p.is_symlink()]


def image_folder(root: str | os.PathLike) -> ImageList:
    """Scan ``root/<class>/*`` or ``root/{train,val,test}/<class>/*``."""
    root = Path(os.path.expanduser(str(root)))
    if not root.exists():
        raise UserError(f"data root '{root}' does not exist — set data.root to a folder of "
                        f"images ({LAYOUT_HINT}).")
    if not root.is_dir():
        raise UserError(f"data root '{root}' is a file, not a folder — set data.root to a "
                        f"folder ({LAYOUT_HINT}).")
    ignored: list[str] = []
    try:
        top = _class_dirs(root)
    except PermissionError:
        raise UserError(f"cannot read data root '{root}' (permission denied) — fix its "
                        "permissions or copy the images somewhere readable.") from None
    names = {p.name for p in top}
    presplit = {"train", "val"} <= names and names <= set(SPLITS)
    parts = [(s, root / s) for s in SPLITS if s in names] if presplit else [(None, root)]

    classes = sorted({c.name for _, part in parts for c in _class_dirs(part, root, ignored)})
    if not classes:
        raise UserError(f"data root '{root}' has no class folders — {LAYOUT_HINT}.")
    if len(classes) < 2:
        raise UserError(f"data root '{root}' has only one class ('{classes[0]}') — "
                        "classification needs at least 2 class folders.")
    index = {c: i for i, c in enumerate(classes)}
    files, labels, splits = [], [], []
    for split, part in parts:
        for class_dir in _class_dirs(part):
            for path in _files_under(class_dir, root, ignored):
                files.append(path.relative_to(root).as_posix())
                labels.append(index[class_dir.name])
                splits.append(split)
    counts = [labels.count(i) for i in range(len(classes))]
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise UserError(f"class folder(s) with no files under '{root}': {', '.join(empty)} — "
                        "add images or remove the folder(s).")
    if ignored:
        log.warning("Ignored %d symlink(s) under %s (symlinked folders, and files that lead outside the data root, "
                    "are not read): %s%s", len(ignored), root, ", ".join(ignored[:10]),
                    f" and {len(ignored) - 10} more" if len(ignored) > 10 else "")
    return ImageList(root=root, classes=classes, files=files, labels=labels,
                     fixed_splits=splits if presplit else None, ignored=ignored)


def synthetic_faces(root: str | os.PathLike, num_classes: int = 11, images_per_class: int = 80,
                    image_size: int = 128, seed: int = 0) -> ImageList:
    """The built-in synthetic faces: rendered into ``root`` on first use, then scanned
    like any other image folder (the render is written atomically, so an existing
    ``root`` is always complete)."""
    root = Path(os.path.expanduser(str(root)))
    if not root.is_dir():

        log.info("Rendering synthetic faces (%d identities × %d images) into %s",
                 num_classes, images_per_class, root)
        try:
            write_dataset(root, num_classes=num_classes, images_per_class=images_per_class,
                          image_size=image_size, seed=seed)
        except FileExistsError:
            pass  # a concurrent job (e.g. a parallel sweep) rendered the same faces first
        except ValueError as err:
            raise UserError(f"{err} (data.source.*)") from None
        except PermissionError:
            raise UserError(f"cannot write the synthetic faces to '{root}' (permission denied) "
                            "— set FACECLS_CACHE_DIR or paths.cache_dir to a writable folder.") from None
    return image_folder(root)

"""Build the in-memory train/val/test tensors for a run from the `data` config."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from omegaconf import DictConfig

from facecls.config.checks import SPLITS
from facecls.config.instantiate import instantiate
from facecls.data import leakage
from facecls.data.decode import decode_images
from facecls.data.faces import FaceCrop, nothing_kept
from facecls.data.mapped import budget_bytes
from facecls.data.preprocess import Preprocess
from facecls.data.sources import ImageList
from facecls.data.split import assign_folds, assign_identity_splits, assign_splits, check_split_by
from facecls.errors import UserError

log = logging.getLogger(__name__)

IMBALANCE_WARNING = 5  # largest class / smallest class above this → a warning


@dataclass
class Split:
    """One split held in memory: ``inputs`` are uint8 images N×3×H×W (or, for a frozen
    backbone, its cached float features), ``labels`` int64 class indices."""

    inputs: torch.Tensor
    labels: torch.Tensor
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataBundle:
    train: Split
    val: Split
    test: Split
    classes: list[str]
    root: Path
    preprocess: Preprocess
    skipped: dict[str, str] = field(default_factory=dict)
    duplicates: list[list[str]] = field(default_factory=list)  # same pixels in several splits
    near_duplicates: list[list[str]] = field(default_factory=list)  # resized/recompressed copies across splits

    def split(self, name: str) -> Split:
        return getattr(self, name)

    def with_train_subset(self, n: int) -> "DataBundle":
        """The first ``n`` training images as both train and val split (an overfitting check)."""

        t = self.train
        subset = Split(t.inputs[:n], t.labels[:n], t.files[:n])
        return replace(self, train=subset, val=subset)


def load_image_list(data_cfg: DictConfig) -> ImageList:
    """Instantiate the configured source (``data.source._target_``)."""
    return instantiate(data_cfg.source)


def build_data(data_cfg: DictConfig, prep: Preprocess, cache_dir: str | Path | None,
               progress: bool | None = None) -> DataBundle:
    """Scan, split and decode the dataset once; return the three splits in memory."""
    images = load_image_list(data_cfg)
    if images.fixed_splits is not None:
        splits = images.fixed_splits
        log.info("Using the train/val/test folders under %s", images.root)
    elif check_split_by((data_cfg.split or {}).get("by", "image")) == "identity":
        s = data_cfg.split
        splits = assign_identity_splits(images.files, images.labels, images.classes, s.train, s.val, s.test,
                                        seed=s.seed)
    else:
        s = data_cfg.split
        splits = assign_splits(images.files, s.train, s.val, s.test, seed=s.seed)
    s = data_cfg.get("split") or {}
    by_identity = s.get("by", "image") == "identity"
    if by_identity and s.get("folds") is not None:
        raise UserError("data.split.folds (k-fold) moves images, not people — it does not combine with "
                        "data.split.by=identity yet; set data.split.folds=null.")
    if s.get("folds") is not None:  # k-fold: fold `fold` of the non-test images is the val split
        splits = assign_folds(images.files, splits, s.folds, s.get("fold", 0), seed=s.get("seed", 0))
    use_cache = cache_dir is not None and data_cfg.get("cache", True)
    # Decode in split order (train, val, test; file order within each): every split is then
    # one block of rows, so its tensor is a view of the decoded pixels, not a second copy.
    order = sorted(range(len(images.files)),
                   key=lambda i: SPLITS.index(splits[i]) if splits[i] in SPLITS else len(SPLITS))
    faces = FaceCrop.from_config(data_cfg.get("faces"))
    pixels, keep, skipped = decode_images(images.root, [images.files[i] for i in order], prep,
                                          Path(cache_dir) if use_cache else None, progress,
                                          max_bytes=budget_bytes(data_cfg.get("cache_max_gb", "auto")), faces=faces)
    if skipped:
        shown = "; ".join(f"{f} ({why})" for f, why in list(skipped.items())[:10])
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        log.warning("Skipped %d unreadable file(s): %s%s", len(skipped), shown, more)
    kept = [i for i, k in zip(order, keep.tolist()) if k]  # file indices, in pixel-row order
    if not kept:
        raise UserError(nothing_kept(images.root, skipped, faces))
    kept_splits = [splits[i] for i in kept]
    classes, relabel = images.classes, list(range(len(images.classes)))
    if by_identity:  # the training classes are the train people; val/test people are numbered after them
        classes, relabel = identity_classes(images.classes, [images.labels[i] for i in kept], kept_splits)
    labels = torch.tensor([relabel[images.labels[i]] for i in kept], dtype=torch.int64)
    kept_files = [images.files[i] for i in kept]
    hashes = leakage.pixel_hashes(pixels)
    duplicates = leakage.cross_split_duplicates(hashes, kept_splits, kept_files)
    near = leakage.near_duplicate_groups(pixels, kept_splits, kept_files, hashes)
    dropped, near_dropped = set(), set()
    if data_cfg.get("drop_duplicates"):
        dropped = leakage.leaking_rows(hashes, kept_splits)
        near_dropped = leakage.leaking_near_rows(near, kept_splits, kept_files) - dropped
    leakage.report(duplicates, len(dropped))
    leakage.report(near, len(near_dropped), what="near-duplicate image(s) (resized, recompressed or cropped copies)")
    dropped |= near_dropped
    kept_splits = [("dropped" if j in dropped else s) for j, s in enumerate(kept_splits)]
    _warn_small_classes(images.classes, torch.tensor([images.labels[i] for i in kept], dtype=torch.int64))
    parts = {}
    for name in SPLITS:
        rows = [j for j, s in enumerate(kept_splits) if s == name]
        if not rows:
            raise UserError(f"the {name} split of '{images.root}' is empty ({len(kept)} images in "
                            "all) — add images or change the data.split ratios.")
        index = torch.tensor(rows)
        if rows[-1] - rows[0] + 1 == len(rows):  # one block of rows: a view, no copy
            inputs = pixels[rows[0]:rows[-1] + 1]
        else:  # data.drop_duplicates took rows out of this split
            inputs = pixels[index]
        parts[name] = Split(inputs, labels[index], [kept_files[j] for j in rows])
    missing = [c for i, c in enumerate(classes) if not (parts["train"].labels == i).any()]
    if missing:
        log.warning("Class(es) with no training image: %s — add images to them.", ", ".join(missing))
    log.info("Data: %d classes, %d train / %d val / %d test images at %d×%d from %s",
             len(classes), len(parts["train"]), len(parts["val"]), len(parts["test"]),
             prep.size, prep.size, images.root)
    if by_identity:
        log.info("Split by identity: %d people train, %d val, %d test (no person in two splits).",
                 len(classes), *(len(set(parts[n].labels.tolist())) for n in ("val", "test")))
    return DataBundle(**parts, classes=classes, root=images.root, preprocess=prep,
                      skipped=skipped, duplicates=duplicates, near_duplicates=near)


def identity_classes(names: list[str], labels: list[int], splits: list[str]) -> tuple[list[str], list[int]]:
    """``data.split.by=identity``: the training classes (the people with train images, in name order)
    and each original label's new number — train people 0…n−1, the other people after them, so
    val/test labels still tell people apart (for verification pairs) but are no training class."""
    in_train = sorted({label for label, s in zip(labels, splits) if s == "train"})
    others = sorted(set(labels) - set(in_train))
    relabel = list(range(len(names)))
    for new, old in enumerate(in_train + others):
        relabel[old] = new
    return [names[i] for i in in_train], relabel


def _warn_small_classes(classes: list[str], labels: torch.Tensor) -> None:
    counts = torch.bincount(labels, minlength=len(classes)).tolist()
    small = [f"{c} ({n})" for c, n in zip(classes, counts) if n < 3]
    if small:
        log.warning("Class(es) with fewer than 3 images cannot appear in train, val and test: %s — "
                    "add images to them.", ", ".join(small))
    present = [n for n in counts if n]
    if present and max(present) > IMBALANCE_WARNING * min(present):
        big, least = classes[counts.index(max(present))], classes[counts.index(min(present))]
        log.warning("Imbalanced classes: %s has %d images, %s only %d (more than %d×) — accuracy then "
                    "favours the large classes; see balanced accuracy and per_class.csv, or try "
                    "trainer.class_weights=balanced or data.sampler=balanced.", big, max(present), least,
                    min(present), IMBALANCE_WARNING)

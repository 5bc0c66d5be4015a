"""LFW (Labeled Faces in the Wild) through torchvision.datasets.LFWPeople.

torchvision no longer downloads LFW by itself, and this tool may run offline, so the files
are placed by hand once; the error message says exactly where. People with fewer than
``min_faces_per_person`` images are left out (as scikit-learn's fetch_lfw_people does),
which turns LFW's 5,749 mostly-single-image identities into a classification problem.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

from torchvision.datasets import LFWPeople

from facecls.data.sources import ImageList
from facecls.errors import UserError

log = logging.getLogger(__name__)

FOLDERS = {"original": "lfw", "funneled": "lfw_funneled", "deepfunneled": "lfw-deepfunneled"}


def _how_to_place(base: Path, image_set: str) -> str:
    return (f"download LFW ({image_set}: lfw{'-' + image_set if image_set != 'original' else ''}.tgz, plus "
            f"people.txt and lfw-names.txt; e.g. the Kaggle mirror 'jessicali9530/lfw-dataset'), put them "
            f"in {base}/ and extract the archive there so {base}/{FOLDERS[image_set]}/<Person_Name>/"
            "<Person_Name>_0001.jpg exists — or point data=imagefolder data.root at any folder of one "
            "sub-folder per person")


def lfw_people(root: str | os.PathLike, image_set: str = "funneled", min_faces_per_person: int = 20,
               download: bool = False) -> ImageList:
    """Every image of each person with at least ``min_faces_per_person`` images."""

    if image_set not in FOLDERS:
        raise UserError(f"data.source.image_set={image_set} — use one of: {', '.join(FOLDERS)}.")
    if int(min_faces_per_person) < 2:
        raise UserError("data.source.min_faces_per_person must be >= 2 (a person needs images in several splits).")
    root = Path(os.path.expanduser(str(root)))
    base = root / LFWPeople.base_folder
    try:
        dataset = LFWPeople(str(root), split="10fold", image_set=image_set, download=bool(download))
        images_dir = Path(dataset.images_dir)
        paths = [Path(p) for p in dataset.data]
    except ValueError:  # download=True: torchvision refuses (LFW is no longer served to it)
        raise UserError(f"LFW cannot be downloaded automatically — {_how_to_place(base, image_set)}; "
                        "then set data.source.download=false.") from None
    except RuntimeError:  # archive or people lists missing or with other checksums
        images_dir = base / FOLDERS[image_set]
        if not images_dir.is_dir():
            raise UserError(f"LFW not found under {base} — {_how_to_place(base, image_set)}.") from None
        log.warning("LFW archive/lists not found or not verified under %s; using the extracted images "
                    "in %s as they are.", base, images_dir)
        paths = sorted(images_dir.glob("*/*.jpg"))
    counts = Counter(p.parent.name for p in paths)
    people = sorted(name for name, n in counts.items() if n >= int(min_faces_per_person))
    if len(people) < 2:
        raise UserError(f"only {len(people)} people in {images_dir} have >= {min_faces_per_person} images — "
                        "lower data.source.min_faces_per_person.")
    index = {name: i for i, name in enumerate(people)}
    kept = [p for p in paths if p.parent.name in index]
    log.info("LFW: %d people with >= %d images, %d images", len(people), min_faces_per_person, len(kept))
    return ImageList(root=images_dir, classes=people,
                     files=[p.relative_to(images_dir).as_posix() for p in kept],
                     labels=[index[p.parent.name] for p in kept])

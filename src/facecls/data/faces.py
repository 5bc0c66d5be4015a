"""Optional face detection and cropping (``data.faces.mode=detect``), before decoding.

Photos of people are mostly not face crops. With detection on, each image is searched for
faces with OpenCV's Haar cascade (shipped inside ``opencv-python-headless`` < 5: the optional
extra ``pip install 'facecls[faces]'``; it works offline), the largest face is taken, its box
grown by ``margin`` on every side, made square and cropped from the full-resolution image —
then resized as any image. An image without a face is skipped and listed (``on_miss=skip``)
or kept whole (``on_miss=keep``). The crops are cached with the decoded pixels (the cache
key includes these settings), so a second run does not detect again.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facecls.errors import UserError

MODES = ("none", "detect")
ON_MISS = ("skip", "keep")
# Haar cascades find faces of ≥ 24 px; larger photos are searched at this size (fast) and
# the box is scaled back to the full image.
SEARCH_SIZE = 640
# Part of the decode-cache key of face crops: crops cached before version 2 came from one
# classifier shared by the decoding threads, which mixed up their boxes — never reuse them.
DETECTOR_VERSION = 2


class NoFaceFound(Exception):
    """The image holds no face the detector finds (the file is skipped with this reason)."""


NO_FACE = "no face found"  # in the reason of a file skipped for it


def nothing_kept(root: Path, skipped: dict[str, str], faces: FaceCrop) -> str:
    """Why no image of ``root`` was kept, in one line: no faces found (and in how many images)
    is not the same mistake as files that do not decode."""
    no_face = sum(NO_FACE in str(why) for why in skipped.values())
    if faces.active and no_face:
        broken = f", {len(skipped) - no_face} more unreadable" if len(skipped) > no_face else ""
        return (f"no faces found in any of the {no_face} image(s) tried under '{root}' (data.faces.mode=detect"
                f"{broken}) — use photos with visible faces, keep such images whole with data.faces.on_miss=keep, "
                "or turn detection off with data.faces.mode=none.")
    return (f"no readable images under '{root}' ({len(skipped)} file(s) failed to decode) — put JPEG/PNG files in "
            "one folder per class.")


@dataclass(frozen=True)
class FaceCrop:
    """``data.faces``: mode none|detect, margin (fraction of the face box per side), on_miss skip|keep."""

    mode: str = "none"
    margin: float = 0.25
    on_miss: str = "skip"
    min_neighbors: int = 5  # the cascade's confidence: more → fewer false faces, more misses

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"data.faces.mode={self.mode} — use none or detect.")
        if self.on_miss not in ON_MISS:
            raise UserError(f"data.faces.on_miss={self.on_miss} — use skip or keep.")
        if isinstance(self.margin, bool) or not 0 <= float(self.margin) <= 2:
            raise UserError(f"data.faces.margin={self.margin} is out of range — use 0 … 2 (e.g. 0.25).")

    @classmethod
    def from_config(cls, value: Any) -> FaceCrop:
        """``data.faces`` as configs hold it: a mapping of the fields, or the short form
        ``data.faces=detect`` / ``none`` (None: no detection). Anything else is one line."""
        if value is None:
            return cls()
        if isinstance(value, str):
            return cls(mode=value)
        if isinstance(value, Mapping):
            return cls(**value)
        raise UserError(f"data.faces={value!r} is not a face setting — use data.faces=detect (or none), or set "
                        "its keys: data.faces.mode=detect data.faces.margin=0.25.")

    @property
    def active(self) -> bool:
        return self.mode == "detect"

    def key(self) -> list:
        """What the decoded pixels depend on (part of the decode cache key)."""
        if not self.active:
            return []
        return [DETECTOR_VERSION, self.mode, float(self.margin), self.on_miss, self.min_neighbors]


@dataclass
class Detector:
    """OpenCV's frontal-face Haar cascade (loaded once per decoding thread)."""

    settings: FaceCrop

    def __post_init__(self):
        try:
            import cv2
        except ImportError:
            raise UserError("data.faces.mode=detect needs OpenCV — pip install 'facecls[faces]'.") from None
        path = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if path is None:
            raise UserError(f"this OpenCV ({cv2.__version__}) ships no Haar cascades (5.0 dropped them) — "
                            "pip install 'opencv-python-headless<5'.")
        self._cv2 = cv2
        self._model_file = path + "haarcascade_frontalface_default.xml"
        self._per_thread = threading.local()

    @property
    def _cascade(self):
        """This thread's own classifier: a CascadeClassifier shared by the decoding threads mixes
        up their results (measured: 169 of 190 boxes wrong with 8 threads), so each thread loads one."""
        cascade = getattr(self._per_thread, "cascade", None)
        if cascade is None:
            cascade = self._per_thread.cascade = self._cv2.CascadeClassifier(self._model_file)
        return cascade

    def largest_face(self, image: Image.Image) -> tuple[int, int, int, int] | None:
        """(left, top, width, height) of the largest face in ``image``, or None."""
        scale = min(1.0, SEARCH_SIZE / max(image.size))
        small = image.convert("L")
        if scale < 1:
            small = small.resize((round(image.width * scale), round(image.height * scale)))
        found = self._cascade.detectMultiScale(np.asarray(small), scaleFactor=1.1,
                                               minNeighbors=self.settings.min_neighbors, minSize=(24, 24))
        if len(found) == 0:
            return None
        x, y, w, h = max(found.tolist(), key=lambda box: box[2] * box[3])
        return round(x / scale), round(y / scale), round(w / scale), round(h / scale)

    def crop_box(self, image: Image.Image) -> tuple[int, int, int, int] | None:
        """The square crop (left, top, right, bottom) around the largest face, with the margin,
        kept inside the image; None when no face is found."""
        face = self.largest_face(image)
        if face is None:
            return None
        x, y, w, h = face
        side = min(round(max(w, h) * (1 + 2 * float(self.settings.margin))), image.width, image.height)
        cx, cy = x + w / 2, y + h / 2
        left = int(min(max(cx - side / 2, 0), image.width - side))
        top = int(min(max(cy - side / 2, 0), image.height - side))
        return left, top, left + side, top + side

    def __call__(self, image: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int] | None]:
        """(the cropped face, its box) — or the whole image with box None (on_miss=keep);
        raises NoFaceFound (on_miss=skip)."""
        box = self.crop_box(image)
        if box is None:
            if self.settings.on_miss == "skip":
                raise NoFaceFound(f"{NO_FACE} (data.faces.on_miss=keep keeps such images whole)")
            return image, None
        return image.crop(box), box

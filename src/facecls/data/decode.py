"""Decode every image once into a uint8 tensor (N×3×H×W), with an on-disk cache.

Epochs then slice batches out of this tensor: no per-sample decoding or PIL work inside the
training loop. The disk cache is keyed by the file list, sizes, mtimes and the resize (with its
interpolation), so an edited or added image invalidates it automatically.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps
from tqdm.auto import tqdm

from facecls.data import mapped
from facecls.data.faces import SEARCH_SIZE, Detector, FaceCrop
from facecls.data.preprocess import Preprocess
from facecls.errors import UserError
from facecls.io import atomic_torch_save

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: images are turned upright by their EXIF orientation
# A truncated JPEG must be reported as broken, not silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Huge images are decoded (draft mode keeps it cheap); only absurd ones are refused.
Image.MAX_IMAGE_PIXELS = 20_000 * 20_000
HEIF_SUFFIXES = (".heic", ".heif", ".hif")
try:  # HEIC/HEIF (phone photos) through the optional extra: pip install 'facecls[heif]'
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF = True
except ImportError:
    HEIF = False


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (L, LA, P, RGBA, CMYK, I;16, F, …) to 8-bit RGB; transparency over white."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        array = np.asarray(image, dtype=np.float64)
        high = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / high)).clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


# Above this many pixels an image is decoded alone (its full pixels stay in memory until reduced).
BIG_PIXELS = 40_000_000
_ONE_BIG_AT_A_TIME = threading.Lock()
# EXIF orientation → the transpose that makes the pixels upright (what ImageOps.exif_transpose does)
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def upright_reduced(image: Image.Image, target: int) -> Image.Image:
    """8-bit RGB, upright (cameras often store the pixels sideways with an orientation tag: a
    sideways face is never trained on), and — for an image more than 4× the ``target`` side —
    first shrunk by an integer factor (``Image.reduce``, a box filter), so the copies that the
    rotation and the mode conversion make are small: a 20000² PNG costs its decoded pixels
    once, not five times. The final resize still starts from at least 2× the target."""
    factor = min(image.size) // (2 * target)
    if factor < 2:
        return to_rgb(ImageOps.exif_transpose(image))
    orientation = image.getexif().get(0x0112)  # read before reduce: the reduced image has no EXIF
    try:
        small = image.reduce(factor)
    except ValueError:  # a mode reduce does not take (palette, 16-bit, 1-bit): convert first
        small = to_rgb(image).reduce(factor)
    if orientation in UPRIGHT:
        small = small.transpose(UPRIGHT[orientation])
    return to_rgb(small)


def open_upright(path: str | os.PathLike) -> Image.Image:
    """The whole image, upright (EXIF orientation applied), 8-bit RGB, first frame."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as image:
            return to_rgb(ImageOps.exif_transpose(image))


def load_image(path: str | os.PathLike, prep: Preprocess, notes: set | None = None, detector=None,
               boxes: dict | None = None) -> torch.Tensor:
    """Decode one file to a uint8 tensor 3×size×size, upright as a photo viewer shows it (the
    EXIF orientation applied), the first frame of a multi-frame file (noted in ``notes``).
    With a face ``detector`` (facecls.data.faces.Detector) the largest face is cropped first
    and its box stored in ``boxes[path]``. Raises on unreadable files (and, with on_miss=skip,
    on images without a face)."""
    if not HEIF and str(path).lower().endswith(HEIF_SUFFIXES):
        raise UserError("HEIC/HEIF photos need the pillow-heif extra — pip install 'facecls[heif]'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's palette/EXIF chatter is not the user's problem
        with Image.open(path) as image:
            if notes is not None and getattr(image, "n_frames", 1) > 1:
                notes.add("multi-frame")
            target = prep.resize or prep.size
            if detector is not None:  # the face is a part of the photo: keep enough pixels to find and crop it
                target = max(target, SEARCH_SIZE)
            image.draft("RGB", (target, target))  # JPEG: decode big photos at reduced scale
            # a huge PNG/TIFF is held whole until reduced: one at a time, so threads do not multiply it
            big = image.width * image.height > BIG_PIXELS
            with _ONE_BIG_AT_A_TIME if big else contextlib.nullcontext():
                image = upright_reduced(image, target)
    if detector is not None:
        image, box = detector(image)
        if boxes is not None:
            boxes[str(path)] = box
    from torchvision.transforms.v2 import functional as TF  # deferred: see resize_image

    return TF.pil_to_tensor(resize_image(image, prep))


def resize_image(image: Image.Image, prep: Preprocess) -> Image.Image:
    """``image`` resized (and centre-cropped) as ``prep`` says, with its interpolation. PIL's
    filters antialias when they shrink, as torchvision's ImageClassification (antialias=True)
    does: its tensor resize matches PIL's to within 1 grey level."""
    # deferred: `import torchvision` loads its whole model zoo, and a warm cache decodes nothing
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    mode = InterpolationMode(prep.interpolation)
    if prep.resize is None:
        return TF.resize(image, [prep.size, prep.size], interpolation=mode, antialias=True)
    return TF.center_crop(TF.resize(image, prep.resize, interpolation=mode, antialias=True), [prep.size, prep.size])


def cache_key(root: Path, files: list[str], prep: Preprocess, faces: FaceCrop | None = None) -> str:
    """Identity of the decoded tensor: every file's path, size and mtime, the resize (and its
    interpolation) and the face-cropping settings."""
    crop = faces.key() if faces is not None else []
    # Bilinear keys are those written before the interpolation was an option (bilinear pixels
    # then too), so those caches stay valid; any other filter gets keys of its own.
    filt = [] if prep.interpolation == "bilinear" else [{"interpolation": prep.interpolation}]
    h = hashlib.sha256(json.dumps([CACHE_VERSION, str(root.resolve()), prep.size, prep.resize, *crop,
                                   *filt]).encode())
    for f in files:
        try:
            st = (root / f).stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            h.update(f"{f}\0missing\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:24]


def _decode_all(root: Path, files: list[str], prep: Preprocess, progress: bool | None,
                out: torch.Tensor | None = None, faces: FaceCrop | None = None):
    """Decode every file into ``out`` (a new tensor when None); unreadable rows stay zero.
    Returns (images, keep, skipped, {file: face box})."""
    images = torch.zeros((len(files), 3, prep.size, prep.size), dtype=torch.uint8) if out is None else out
    skipped: dict[str, str] = {}
    notes: set[str] = set()
    detector = Detector(faces) if faces is not None and faces.active else None
    boxes: dict[str, tuple | None] = {}

    def work(i: int) -> None:
        try:
            images[i] = load_image(root / files[i], prep, notes, detector, boxes)
        except Exception as err:  # any unreadable file is skipped and reported, never fatal
            skipped[files[i]] = f"{type(err).__name__}: {err}".splitlines()[0][:200]

    # PIL releases the GIL while decoding and resizing, so threads use every core.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(tqdm(pool.map(work, range(len(files))), total=len(files),
                  desc="detecting faces and decoding" if detector else "decoding images",
                  unit="img", disable=None if progress is None else not progress, leave=False))
    if "multi-frame" in notes:
        log.info("Some files hold several frames (animated GIF/WebP, multi-page TIFF): their first frame is used.")
    keep = torch.tensor([f not in skipped for f in files], dtype=torch.bool)
    if detector is not None:
        log.info("Faces: %d of %d images cropped to their largest face", sum(b is not None for b in boxes.values()),
                 len(files))
    boxes = {os.path.relpath(path, root): box for path, box in boxes.items()}
    return images, keep, skipped, boxes


def decode_images(root: Path, files: list[str], prep: Preprocess, cache_dir: Path | None,
                  progress: bool | None = None, max_bytes: int | None = None, faces: FaceCrop | None = None):
    """Return (uint8 images N×3×S×S of the readable files, keep mask over ``files``,
    {skipped file: reason}). Re-uses ``cache_dir/tensors/<key>.pt`` when present.

    Pixels that would take more than ``max_bytes`` (data.cache_max_gb) are decoded into a
    file under ``cache_dir`` and memory-mapped instead of held in memory (facecls.data.mapped)."""

    shape = (len(files), 3, prep.size, prep.size)
    over_budget = max_bytes is not None and math.prod(shape) > max_bytes
    if over_budget and cache_dir is None:
        raise UserError(f"the decoded images need {math.prod(shape) / mapped.GB:.1f} GB, more than "
                        f"data.cache_max_gb ({max_bytes / mapped.GB:.1f} GB), and with data.cache=false "
                        "there is no disk cache to keep them in — set data.cache=true (or raise data.cache_max_gb).")
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "tensors" / f"{cache_key(root, files, prep, faces)}.pt"
        if path.is_file():
            try:
                # mmap over the budget: the pixels stay in the file, pages load as batches need them
                saved = torch.load(path, weights_only=True, mmap=over_budget)
                log.info("Loaded %d decoded images from cache %s", int(saved["keep"].sum()), path)
                return saved["images"], saved["keep"], dict(saved["skipped"])
            except Exception as err:  # a damaged cache is rebuilt, not trusted
                log.warning("Ignoring unreadable tensor cache %s (%s)", path, err)
        found = mapped.load_mapped(path)  # decoded over the budget by an earlier run
        if found is not None:
            log.info("Memory-mapped %d decoded images from cache %s", len(found[0]), path.with_suffix(".u8"))
            return found
        if over_budget:
            return mapped.decode_to_file(path, shape, lambda out: _decode_all(root, files, prep, progress, out,
                                                                              faces)[:3])
    images, keep, skipped, boxes = _decode_all(root, files, prep, progress, faces=faces)
    if not bool(keep.all()):
        images = images[keep]  # a copy, only when some file could not be read
    if path is not None:

        try:
            # the face boxes travel with the pixels they made (for inspection; not read back)
            atomic_torch_save({"images": images, "keep": keep, "skipped": skipped, "face_boxes": boxes}, path)
        except OSError as err:
            log.warning("Could not write the tensor cache %s (%s); continuing without it", path, err)
    return images, keep, skipped

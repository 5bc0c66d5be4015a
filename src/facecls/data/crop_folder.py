"""``facecls make-data faces``: a folder of photos → a folder of face crops (a make-data
workflow over the detector in data/faces.py and the decoder in data/decode.py)."""
from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from facecls.data.decode import open_upright
from facecls.data.faces import Detector, FaceCrop, NoFaceFound
from facecls.data.sources import image_folder
from facecls.io import atomic_write, atomic_write_text, csv_text


def write_crops(root: Path, out: Path, settings: FaceCrop, progress: bool | None = None) -> tuple[int, list[str]]:
    """Crop the largest face of every image under ``root`` (an ImageFolder) into the same
    class folders under ``out`` (JPEG), with boxes.csv; return (written, files without a face)."""
    images = image_folder(root)
    detector = Detector(settings)
    rows, missed = [], []
    bar = tqdm(images.files, desc="detecting faces", unit="img", disable=None if progress is None else not progress)
    for name in bar:
        try:
            face, box = detector(open_upright(images.root / name))
        except NoFaceFound:
            missed.append(name)
            continue
        except Exception as err:  # an unreadable file: listed, never fatal
            missed.append(f"{name} ({type(err).__name__})")
            continue
        target = (out / name).with_suffix(".jpg")
        atomic_write(target, lambda f, face=face: face.save(f, format="JPEG", quality=95))
        rows.append([name, *box])
    atomic_write_text(out / "boxes.csv", csv_text(["file", "left", "top", "right", "bottom"], rows))
    return len(rows), missed

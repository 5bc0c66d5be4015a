"""Procedurally rendered synthetic faces: the built-in default dataset.

Each class is one made-up person with fixed traits (head shape, skin, hair,
eyes, nose, mouth, glasses, beard, ears) drawn from the seed.  Every image of
that person then gets its own pose, expression, lighting, background clutter,
noise and occasional occlusion, so telling people apart is a real (if small)
learning problem rather than a lookup of one distinctive pixel colour.

Traits come from small discrete palettes on purpose: with 11 identities, some
people will share a hair colour or a face shape, and the classifier has to
combine several cues.  All randomness flows from ``numpy.random.default_rng``
seeded per identity and per image, so the same seed gives byte-identical files.

The trait space holds ~10^11 combinations, so hundreds of people (open-set
recognition wants 200+) fit; to keep every pair of them telling apart, a person
drawn within ``MIN_TRAIT_DIFFERENCES`` visible traits of an earlier one is
redrawn from a further stream.  Earlier people never change, and the draws that
were already far enough apart (every one of the first 48 for seeds 0-199) are
exactly what they were before this rule existed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from facecls.data._face_drawing import draw_background_clutter, draw_face

DEFAULT_NAMES: list[str] = [
    "ada_hart", "ben_okoro", "cara_lindqvist", "dev_patel", "elena_rossi", "farid_haddad",
    "grace_mwangi", "hugo_brandt", "iris_tanaka", "jonas_weber", "kemi_adeyemi", "liam_oconnor",
    "mei_chen", "nadia_petrova", "omar_farouk", "priya_nair", "quinn_murphy", "rosa_alvarez",
    "sam_kowalski", "tara_singh", "umar_bello", "vera_novak", "wes_carter", "xena_papadakis",
    "yuki_sato", "zara_ahmed", "arlo_finch", "bea_moreau", "cyrus_karimi", "dina_levi",
    "eli_johansson", "fay_oduya", "gus_mendes", "hana_kim", "ivan_horvat", "jade_nguyen",
    "kai_hoffmann", "lena_fischer", "milo_dubois", "nora_quist", "otto_berg", "pia_santos",
    "reza_tehrani", "sofia_lund", "theo_marsh", "uma_reddy", "vik_sharma", "wren_ellis",
]

# Small palettes so identities sometimes share a trait value (see module docstring).
_SKIN = [(255, 224, 196), (241, 194, 160), (224, 172, 125), (198, 134, 86), (161, 102, 64), (110, 70, 45)]
_HAIR = [(20, 18, 18), (75, 45, 25), (140, 90, 45), (215, 180, 110), (170, 60, 30), (150, 150, 150)]
_EYES = [(60, 40, 25), (70, 110, 160), (70, 120, 70), (110, 90, 60)]
_LIPS = [(160, 70, 70), (190, 90, 100), (120, 60, 55)]
_HAIR_STYLES = ["short", "long", "bald", "fringe", "bun", "side_part", "mohawk"]
_JAWS = ["round", "square", "pointed"]
_NOSES = ["triangle", "round", "line"]


@dataclasses.dataclass(frozen=True)
class Identity:
    """Fixed traits of one synthetic person (sizes are multipliers around 1.0)."""

    name: str
    face_w: float
    face_h: float
    jaw: str
    skin: tuple[int, int, int]
    hair_style: str
    hair_color: tuple[int, int, int]
    eye_spacing: float
    eye_size: float
    eye_color: tuple[int, int, int]
    brow_weight: float
    brow_tilt: float
    nose: str
    nose_size: float
    mouth_width: float
    lip: tuple[int, int, int]
    glasses: str
    glasses_color: tuple[int, int, int]
    beard: str
    ear_size: float


def class_names(num_classes: int) -> list[str]:
    """Return ``num_classes`` distinct, filesystem-safe names (numbered past the fixed list)."""
    n = len(DEFAULT_NAMES)
    return [DEFAULT_NAMES[i] if i < n else f"{DEFAULT_NAMES[i % n]}_{i // n + 1}" for i in range(num_classes)]


# Every trait with its options, in Identity's field order: traits are drawn in this order, and
# an identity's position in each list is its code for the distance check.
_LEVELS = {"face_w": (0.85, 1.12), "face_h": (0.9, 1.1), "eye_spacing": (0.36, 0.5), "eye_size": (0.8, 1.2),
           "brow_weight": (0.6, 1.5), "brow_tilt": (-1, 1), "nose_size": (0.8, 1.3), "mouth_width": (0.75, 1.25),
           "ear_size": (0.8, 1.25)}
_CHOICES = {"jaw": _JAWS, "skin": _SKIN, "hair_style": _HAIR_STYLES, "hair_color": _HAIR, "eye_color": _EYES,
            "nose": _NOSES, "lip": _LIPS, "glasses": ["none", "none", "round", "square"],
            "glasses_color": [(20, 20, 20), (120, 80, 30), (180, 180, 190)],
            "beard": ["none", "none", "none", "stubble", "full"]}
_TRAITS = [f.name for f in dataclasses.fields(Identity) if f.name != "name"]

# Two people differ in at least this many visible traits (see the module docstring).
MIN_TRAIT_DIFFERENCES = 3
_MAX_REDRAWS = 1000  # never reached in practice: the trait space is ~10^11 combinations


def _draw_identity(name: str, rng: np.random.Generator) -> Identity:
    """One person's traits; the draw order is fixed so a seed always gives the same person."""
    traits: dict = {}
    for trait in _TRAITS:
        if trait in _LEVELS:
            # Continuous traits are quantised to a few levels so that they can coincide too.
            lo, hi = _LEVELS[trait]
            traits[trait] = round(float(np.linspace(lo, hi, 3)[rng.integers(3)]), 3)
        else:
            options = _CHOICES[trait]
            traits[trait] = options[int(rng.integers(len(options)))]
    return Identity(name=name, **traits)


def _level(trait: str, value: float) -> int:
    lo, hi = _LEVELS[trait]
    return int(np.argmin(np.abs(np.linspace(lo, hi, 3) - value)))


def _visible_codes(identity: Identity) -> list[int]:
    """The traits a picture shows, as small integers (equal value = equal code); the frame
    colour only shows when there are glasses."""
    values = dataclasses.asdict(identity)
    codes = []
    for trait in _TRAITS:
        value = values[trait]
        if trait in _LEVELS:
            codes.append(_level(trait, value))
        elif trait == "glasses_color" and values["glasses"] == "none":
            codes.append(-1)
        else:
            codes.append(_CHOICES[trait].index(tuple(value) if isinstance(value, list) else value))
    return codes


def make_identities(num_classes: int, seed: int) -> list[Identity]:
    """Draw one :class:`Identity` per class, deterministically from ``seed``.

    Each person differs from every earlier one in at least ``MIN_TRAIT_DIFFERENCES`` visible
    traits; a person too close is redrawn from streams ``[seed, 0, idx, attempt]``.
    """
    identities: list[Identity] = []
    seen = np.empty((0, len(_TRAITS)), dtype=np.int64)
    for idx, name in enumerate(class_names(num_classes)):
        for attempt in range(_MAX_REDRAWS):
            # One generator per identity: adding classes never changes earlier ones. The first
            # attempt uses the stream every identity used before redraws existed.
            rng = np.random.default_rng([seed, 0, idx] if attempt == 0 else [seed, 0, idx, attempt])
            identity = _draw_identity(name, rng)
            codes = np.asarray([_visible_codes(identity)], dtype=np.int64)
            if not len(seen) or (seen != codes).sum(1).min() >= MIN_TRAIT_DIFFERENCES:
                break
        identities.append(identity)
        seen = np.concatenate([seen, codes])
    return identities


def _rand_color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, size=3))  # type: ignore[return-value]


def render_face(identity: Identity, rng: np.random.Generator, image_size: int) -> Image.Image:
    """Render one RGB image of ``identity`` with per-image nuisance variation drawn from ``rng``."""
    w = 2 * image_size  # draw at 2x and box-downsample: cheap anti-aliasing for Pillow's aliased shapes

    # Background: a random base colour plus clutter shapes, so the background never identifies a class.
    bg = Image.new("RGB", (w, w), _rand_color(rng))
    clutter = [{"kind": ("ellipse", "rect", "line")[int(rng.integers(3))], "box": rng.uniform(-0.1, 1.1, 4).tolist(),
                "color": _rand_color(rng), "width": float(rng.uniform(0.01, 0.05))}
               for _ in range(int(rng.integers(2, 8)))]
    draw_background_clutter(ImageDraw.Draw(bg), w, clutter)

    expression = {
        "mouth_curve": float(rng.uniform(-1, 1)), "mouth_open": float(rng.uniform(0, 1)),
        "eye_open": float(rng.uniform(0.15, 1.0)), "brow_raise": float(rng.uniform(-1, 1)),
        "gaze": float(rng.uniform(-1, 1)), "shirt": _rand_color(rng), "skin_tint": float(rng.uniform(0.85, 1.12)),
    }
    face = Image.new("RGBA", (w, w), (0, 0, 0, 0))
    draw_face(ImageDraw.Draw(face), w, dataclasses.asdict(identity), expression)

    # Pose: one affine map (rotation + scale + translation) applied to the whole face layer.
    angle = np.deg2rad(rng.uniform(-12, 12))
    scale = rng.uniform(0.8, 1.15)
    tx, ty = rng.uniform(-0.12, 0.12, 2) * w
    c, s = np.cos(angle) / scale, np.sin(angle) / scale
    ox, oy = w / 2 + tx, w / 2 + ty  # where the layer centre lands
    # PIL wants the inverse map (output -> input coordinates).
    coeffs = (c, s, w / 2 - c * ox - s * oy, -s, c, w / 2 + s * ox - c * oy)
    face = face.transform((w, w), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
    bg.paste(face, (0, 0), face)
    img = bg.reduce(2)  # 2x2 box average; much faster than LANCZOS and just as good at exactly 2x

    # Lighting and sensor noise in float space: a directional brightness ramp,
    # global contrast/brightness change and a colour cast, then Gaussian noise.
    arr = np.asarray(img, dtype=np.float32)
    xs = np.linspace(-0.5, 0.5, image_size, dtype=np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    gradient = np.cos(theta) * xs[None, :] + np.sin(theta) * xs[:, None]
    ramp = (1.0 + rng.uniform(0.0, 0.7) * gradient).astype(np.float32)
    contrast, bright = rng.uniform(0.65, 1.2), rng.uniform(-30, 30)
    cast = rng.uniform(0.88, 1.12, 3).astype(np.float32)
    arr = ((arr - 128.0) * np.float32(contrast) + np.float32(128.0 + bright)) * ramp[..., None] * cast
    arr += np.float32(rng.uniform(2, 14)) * rng.standard_normal(arr.shape, dtype=np.float32)

    # Occasional occluder (a hand, a mug, a lamp post...): a solid box over part of the face.
    if rng.random() < 0.2:
        x0, y0 = rng.integers(0, image_size, 2)
        size = rng.integers(image_size // 6, image_size // 3, 2)
        arr[y0:y0 + size[1], x0:x0 + size[0]] = np.asarray(_rand_color(rng), dtype=np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


LAYOUTS = ("imagefolder", "lfw")


def write_dataset(out_dir: str | Path, num_classes: int = 11, images_per_class: int = 80,
                  image_size: int = 128, seed: int = 0, progress: bool = True, layout: str = "imagefolder") -> Path:
    """Render the dataset as JPEGs in an ImageFolder tree ``out_dir/<class>/<class>_<NNN>.jpg``.

    ``layout="lfw"`` names the files as LFW does instead, ``<class>/<class>_<NNNN>.jpg`` numbered
    from 0001, so LFW ``pairs.txt`` files (:mod:`facecls.faces.pairs`) can address them; the
    pixels are the same either way.

    Files are written to a temporary sibling directory that is renamed into place
    only when complete, so an interrupted run never leaves a plausible-looking
    partial dataset.  Raises ``ValueError`` for bad arguments (num_classes < 2,
    images_per_class < 1, image_size < 16, seed < 0, an unknown layout) and
    ``FileExistsError`` if ``out_dir`` exists and is not empty.  Returns ``out_dir``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
    if images_per_class < 1:
        raise ValueError(f"images_per_class must be at least 1, got {images_per_class}.")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}.")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}.")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}.")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"Refusing to overwrite existing non-empty path {out_dir}; delete it or choose another.")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Plain mkdir (not tempfile.mkdtemp, which forces mode 0700) so the final folder gets the usual umask
    # permissions; the random suffix keeps concurrent writers (e.g. parallel sweep jobs) apart.
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        with tqdm(total=num_classes * images_per_class, desc="Rendering synthetic faces",
                  unit="img", disable=None if progress else True) as bar:
            # LFW numbers each person's photos from 0001; the ImageFolder layout from 000.
            first, digits = (1, 4) if layout == "lfw" else (0, 3)
            digits = max(digits, len(str(images_per_class - 1 + first)))
            for idx, identity in enumerate(make_identities(num_classes, seed)):
                class_dir = tmp / identity.name
                class_dir.mkdir()
                for j in range(images_per_class):
                    rng = np.random.default_rng([seed, 1, idx, j])  # per-image stream: order-independent
                    img = render_face(identity, rng, image_size)
                    img.save(class_dir / f"{identity.name}_{j + first:0{digits}d}.jpg", "JPEG", quality=90)
                    bar.update(1)
        if out_dir.exists():
            out_dir.rmdir()  # an empty directory is allowed and simply replaced
        try:
            os.replace(tmp, out_dir)
        except OSError as err:
            if out_dir.is_dir() and any(out_dir.iterdir()):  # lost a race with another writer
                raise FileExistsError(f"{out_dir} was written by another process while rendering.") from err
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir

"""Pillow drawing helpers for the synthetic face dataset.

Everything here is pure drawing: identity traits and per-image randomness are
decided by the caller (:mod:`facecls.data.synthetic`) and passed in, so these
functions never touch a random number generator themselves.

Coordinates are in a square face-local frame of side ``w`` with the head centred
at ``(w / 2, 0.52 * w)``; the caller later rotates, scales and translates the
whole layer, which is why nothing here knows about image-level pose.
"""

from __future__ import annotations

import numpy as np
from PIL import ImageDraw

RGB = tuple[int, int, int]


def _shade(color: RGB, factor: float) -> RGB:
    """Darken (<1) or lighten (>1) a colour, clamped to the valid range."""
    return tuple(int(max(0, min(255, c * factor))) for c in color)  # type: ignore[return-value]


def _curve(x0: float, x1: float, y: float, bend: float, n: int = 9) -> list[tuple[float, float]]:
    """Points of a parabola from x0 to x1; positive ``bend`` sags down (a smile)."""
    ts = np.linspace(0.0, 1.0, n)
    return [(x0 + (x1 - x0) * t, y + bend * (1.0 - (2.0 * t - 1.0) ** 2)) for t in ts]


def draw_background_clutter(draw: ImageDraw.ImageDraw, w: int, shapes: list[dict]) -> None:
    """Draw pre-sampled clutter shapes (dicts with kind, box, color, width)."""
    for s in shapes:
        box = [v * w for v in s["box"]]
        box = [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])]
        if s["kind"] == "ellipse":
            draw.ellipse(box, fill=s["color"])
        elif s["kind"] == "rect":
            draw.rectangle(box, fill=s["color"])
        else:
            draw.line(box, fill=s["color"], width=max(1, int(s["width"] * w)))


def draw_face(draw: ImageDraw.ImageDraw, w: int, t: dict, e: dict) -> None:
    """Draw one face onto a transparent RGBA layer.

    ``t`` holds the identity's fixed traits (see ``Identity`` in synthetic.py)
    and ``e`` the per-image expression/appearance: ``mouth_curve`` (-1..1),
    ``mouth_open`` (0..1), ``eye_open`` (0..1), ``brow_raise`` (-1..1),
    ``gaze`` (-1..1), ``shirt`` colour and ``skin_tint`` factor.
    """
    cx, cy = w / 2, 0.52 * w
    fw, fh = 0.2 * w * t["face_w"], 0.27 * w * t["face_h"]
    skin = _shade(t["skin"], e["skin_tint"])
    hair = t["hair_color"]
    dark = _shade(skin, 0.7)

    # Shoulders and neck first so the head overlaps them; the shirt colour is
    # per image (clothes change) so the model cannot identify people by it.
    draw.ellipse([cx - 0.42 * w, cy + 0.9 * fh, cx + 0.42 * w, cy + 0.9 * fh + 0.5 * w], fill=e["shirt"])
    draw.rectangle([cx - 0.3 * fw, cy + 0.5 * fh, cx + 0.3 * fw, cy + 1.05 * fh], fill=dark)

    # Long hair hangs behind the head and must be drawn before it.
    if t["hair_style"] == "long":
        draw.rounded_rectangle([cx - 1.25 * fw, cy - 1.15 * fh, cx + 1.25 * fw, cy + 1.25 * fh],
                               radius=int(fw * 0.9), fill=hair)

    # Ears sit behind the head outline, vertically around eye level.
    ew, eh = 0.22 * fw * t["ear_size"], 0.3 * fh * t["ear_size"]
    for sx in (-1, 1):
        ex = cx + sx * fw * 0.97
        draw.ellipse([ex - ew, cy - 0.05 * fh - eh, ex + ew, cy - 0.05 * fh + eh], fill=dark)

    # Head: an ellipse, plus a jaw shape that squares off or points the chin.
    draw.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    if t["jaw"] == "square":
        draw.rounded_rectangle([cx - 0.9 * fw, cy, cx + 0.9 * fw, cy + 0.97 * fh], radius=int(0.35 * fw), fill=skin)
    elif t["jaw"] == "pointed":
        draw.polygon([(cx - 0.93 * fw, cy + 0.2 * fh), (cx + 0.93 * fw, cy + 0.2 * fh), (cx, cy + 1.15 * fh)],
                     fill=skin)

    if t["beard"] != "none":
        # Beard covers the lower face; "stubble" is a darker skin tone rather than hair colour.
        color = hair if t["beard"] == "full" else _shade(skin, 0.78)
        draw.polygon([(cx - 0.95 * fw, cy + 0.05 * fh), (cx - 0.6 * fw, cy + 0.85 * fh), (cx, cy + 1.12 * fh),
                      (cx + 0.6 * fw, cy + 0.85 * fh), (cx + 0.95 * fw, cy + 0.05 * fh),
                      (cx + 0.45 * fw, cy + 0.45 * fh), (cx - 0.45 * fw, cy + 0.45 * fh)], fill=color)

    _draw_hair(draw, cx, cy, fw, fh, t["hair_style"], hair)
    _draw_eyes_and_brows(draw, cx, cy, fw, fh, t, e, skin)

    # Nose: shape and size are identity traits.
    ny, ns = cy + 0.2 * fh, 0.13 * fw * t["nose_size"]
    if t["nose"] == "triangle":
        draw.polygon([(cx, ny - 2 * ns), (cx - ns, ny + ns * 0.6), (cx + ns, ny + ns * 0.6)], fill=_shade(skin, 0.82))
    elif t["nose"] == "round":
        draw.ellipse([cx - ns, ny - ns * 0.6, cx + ns, ny + ns * 0.9], fill=_shade(skin, 0.85))
    else:
        draw.line([(cx, ny - 2 * ns), (cx + 0.5 * ns, ny + 0.6 * ns), (cx - 0.4 * ns, ny + 0.7 * ns)],
                  fill=_shade(skin, 0.6), width=max(1, int(w * 0.012)))

    # Mouth: width is identity, curvature/openness are expression.
    my, mw = cy + 0.52 * fh, 0.42 * fw * t["mouth_width"]
    bend = 0.12 * fh * e["mouth_curve"]
    top = _curve(cx - mw, cx + mw, my, bend)
    if e["mouth_open"] > 0.35:
        bottom = _curve(cx + mw, cx - mw, my, bend + 0.15 * fh * e["mouth_open"])
        draw.polygon(top + bottom, fill=(70, 20, 25), outline=t["lip"])
    else:
        draw.line(top, fill=t["lip"], width=max(2, int(w * 0.018)), joint="curve")

    if t["glasses"] != "none":
        _draw_glasses(draw, cx, cy, fw, fh, t)


def _draw_hair(draw: ImageDraw.ImageDraw, cx: float, cy: float, fw: float, fh: float, style: str, hair: RGB) -> None:
    """Top-of-head hair; styles are coarse silhouettes so they survive downsampling."""
    top = [cx - 1.04 * fw, cy - 1.08 * fh, cx + 1.04 * fw, cy + 0.1 * fh]
    if style == "bald":
        # A fringe of hair just above the ears keeps "bald" from looking like a blank egg.
        for sx in (-1, 1):
            start = 90 if sx < 0 else 270  # outer half of a small ellipse on each side
            draw.chord([cx + sx * 0.9 * fw - 0.2 * fw, cy - 0.6 * fh, cx + sx * 0.9 * fw + 0.2 * fw, cy - 0.05 * fh],
                       start, start + 180, fill=hair)
        return
    if style == "mohawk":
        draw.rounded_rectangle([cx - 0.18 * fw, cy - 1.25 * fh, cx + 0.18 * fw, cy - 0.35 * fh],
                               radius=int(0.15 * fw), fill=hair)
        return
    draw.chord(top, 180, 360, fill=hair)
    if style == "fringe":
        draw.rectangle([cx - 0.9 * fw, cy - 0.75 * fh, cx + 0.9 * fw, cy - 0.38 * fh], fill=hair)
    elif style == "bun":
        r = 0.38 * fw
        draw.ellipse([cx - r, cy - 1.05 * fh - 1.6 * r, cx + r, cy - 1.05 * fh + 0.4 * r], fill=hair)
    elif style == "side_part":
        draw.polygon([(cx - 1.02 * fw, cy - 0.45 * fh), (cx - 0.2 * fw, cy - 0.95 * fh),
                      (cx + 0.95 * fw, cy - 0.7 * fh), (cx + 1.02 * fw, cy - 0.3 * fh)], fill=hair)
    elif style == "long":
        # Side locks framing the face, in front of the ears.
        for sx in (-1, 1):
            draw.rectangle([min(cx + sx * 1.05 * fw, cx + sx * 0.78 * fw), cy - 0.6 * fh,
                            max(cx + sx * 1.05 * fw, cx + sx * 0.78 * fw), cy + 0.55 * fh], fill=hair)


def _draw_eyes_and_brows(draw: ImageDraw.ImageDraw, cx: float, cy: float, fw: float, fh: float,
                         t: dict, e: dict, skin: RGB) -> None:
    """Eyes (spacing, size, iris colour fixed; openness and gaze vary) and brows."""
    ey = cy - 0.12 * fh
    ew, eh = 0.2 * fw * t["eye_size"], 0.12 * fh * t["eye_size"] * (0.25 + 0.75 * e["eye_open"])
    ir = min(0.55 * ew, 0.09 * fh * t["eye_size"])
    for sx in (-1, 1):
        ex = cx + sx * fw * t["eye_spacing"]
        draw.ellipse([ex - ew, ey - eh, ex + ew, ey + eh], fill=(240, 240, 235))
        ix = ex + e["gaze"] * 0.4 * ew
        if eh > 0.3 * ir:  # nearly closed eyes show no iris
            iy = min(ir, eh)  # the iris is clipped by the eyelids when the eye is half closed
            draw.ellipse([ix - ir, ey - iy, ix + ir, ey + iy], fill=t["eye_color"])
            draw.ellipse([ix - 0.4 * ir, ey - 0.4 * iy, ix + 0.4 * ir, ey + 0.4 * iy], fill=(15, 15, 15))
        by = ey - 0.12 * fh * t["eye_size"] - 0.08 * fh - 0.07 * fh * e["brow_raise"]
        # Tilt: positive raises the outer end, giving a characteristic look per identity.
        tilt = 0.03 * fh * t["brow_tilt"]
        draw.line([(ex - sx * ew * 1.1, by + tilt), (ex + sx * ew * 1.1, by - tilt)],
                  fill=_shade(t["hair_color"], 0.8), width=max(1, int(0.06 * fh * t["brow_weight"])))


def _draw_glasses(draw: ImageDraw.ImageDraw, cx: float, cy: float, fw: float, fh: float, t: dict) -> None:
    """Frames over the eyes; shape and frame colour are identity traits."""
    ey, r = cy - 0.12 * fh, 0.3 * fw
    width = max(2, int(0.035 * fw))
    for sx in (-1, 1):
        ex = cx + sx * fw * t["eye_spacing"]
        box = [ex - r, ey - 0.75 * r, ex + r, ey + 0.75 * r]
        if t["glasses"] == "round":
            draw.ellipse(box, outline=t["glasses_color"], width=width)
        else:
            draw.rectangle(box, outline=t["glasses_color"], width=width)
    gap = fw * t["eye_spacing"] - r
    draw.line([(cx - gap, ey), (cx + gap, ey)], fill=t["glasses_color"], width=width)

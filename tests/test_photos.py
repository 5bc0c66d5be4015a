"""Real photo folders: camera orientation, other formats, multi-frame files, HEIC without its
extra, and file names that are not UTF-8 (files the tests write)."""
from __future__ import annotations

import hashlib
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from facecls.data import decode
from facecls.data.decode import Preprocess, decode_images, load_image
from facecls.data.split import assign_splits, hash_fraction
from facecls.errors import UserError

PREP = Preprocess(size=16)


def pattern() -> Image.Image:
    """An asymmetric 24×16 RGB picture: any rotation or flip changes it."""
    array = np.zeros((16, 24, 3), dtype=np.uint8)
    array[:, :8, 0] = 250          # a red band on the left
    array[:4, :, 1] = 200          # a green band at the top
    array[10:, 20:, 2] = 255       # a blue corner at the bottom right
    return Image.fromarray(array)


def test_exif_orientation_is_applied_as_a_photo_viewer_would(tmp_path):
    upright = pattern()
    upright.save(tmp_path / "upright.png")
    # Stored sideways with orientation 6 ("turn 90° clockwise to show"): the camera's way.
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.png", exif=exif.tobytes())
    assert Image.open(tmp_path / "sideways.png").size == (16, 24)  # the pixels on disk are sideways
    assert torch.equal(load_image(tmp_path / "sideways.png", PREP), load_image(tmp_path / "upright.png", PREP))
    # without the tag the same pixels would decode differently (the test can tell)
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "untagged.png")
    assert not torch.equal(load_image(tmp_path / "untagged.png", PREP), load_image(tmp_path / "upright.png", PREP))


def test_webp_tiff_and_16_bit_png_decode(tmp_path):
    picture = pattern()
    picture.save(tmp_path / "a.png")
    picture.save(tmp_path / "a.webp", lossless=True)
    picture.save(tmp_path / "a.tiff")
    reference = load_image(tmp_path / "a.png", PREP)
    assert torch.equal(load_image(tmp_path / "a.webp", PREP), reference)
    assert torch.equal(load_image(tmp_path / "a.tiff", PREP), reference)
    deep = (np.asarray(picture.convert("L"), dtype=np.uint16) * 257)  # 16-bit gray
    Image.fromarray(deep).save(tmp_path / "deep.png")
    out = load_image(tmp_path / "deep.png", PREP)
    assert out.shape == (3, 16, 16) and out.dtype == torch.uint8 and int(out.max()) > 200


def test_multi_frame_files_use_their_first_frame_and_say_so(tmp_path, caplog):
    first, second = pattern(), pattern().transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    first.save(tmp_path / "anim.gif", save_all=True, append_images=[second])
    first.save(tmp_path / "still.gif")
    with caplog.at_level(logging.INFO, logger="facecls.data.decode"):
        images, keep, skipped = decode_images(tmp_path, ["anim.gif", "still.gif"], PREP, None, progress=False)
    assert bool(keep.all()) and not skipped and torch.equal(images[0], images[1])
    assert caplog.text.count("their first frame is used") == 1


def test_a_real_heic_file_decodes_to_its_source_pixels(tmp_path):
    """A HEIC photo written by libheif (through pillow-heif, the heif extra) decodes to ≈ the
    picture it was encoded from (lossy: within a few grey levels), also in a folder with a PNG."""
    pillow_heif = pytest.importorskip("pillow_heif")
    source = np.zeros((48, 64, 3), dtype=np.uint8)
    source[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)[None]  # smooth ramps and a block:
    source[..., 1] = np.linspace(0, 255, 48, dtype=np.uint8)[:, None]  # what a phone photo is like
    source[10:30, 20:40, 2] = 220
    picture = Image.fromarray(source)
    picture.save(tmp_path / "source.png")
    pillow_heif.from_pillow(picture).save(tmp_path / "phone.HEIC", quality=90)
    assert (tmp_path / "phone.HEIC").read_bytes()[4:12] == b"ftypheic"  # a real HEIC container

    prep = Preprocess(size=32)
    reference = load_image(tmp_path / "source.png", prep).int()
    heic = load_image(tmp_path / "phone.HEIC", prep)
    assert heic.shape == (3, 32, 32) and heic.dtype == torch.uint8
    off = (heic.int() - reference).abs()
    assert off.float().mean() < 2 and off.max() < 16, (off.float().mean(), off.max())  # here: 0.53 and 2
    flipped = load_image(tmp_path / "source.png", prep).flip(-1).int()
    assert (heic.int() - flipped).abs().float().mean() > 30  # the comparison can fail
    images, keep, skipped = decode_images(tmp_path, ["phone.HEIC", "source.png"], prep, None, progress=False)
    assert bool(keep.all()) and not skipped and torch.equal(images[0], heic)


def test_heic_without_the_extra_is_skipped_with_a_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "HEIF", False)  # as without pillow-heif (the dev extra installs it)
    pattern().save(tmp_path / "fine.png")
    (tmp_path / "phone.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    with pytest.raises(UserError, match=r"pip install 'facecls\[heif\]'"):
        load_image(tmp_path / "phone.HEIC", PREP)
    _, keep, skipped = decode_images(tmp_path, ["fine.png", "phone.HEIC"], PREP, None, progress=False)
    assert keep.tolist() == [True, False] and "facecls[heif]" in skipped["phone.HEIC"]


def test_split_hash_takes_raw_bytes_and_keeps_every_utf8_name_where_it_was():
    # unchanged for names that worked before (the old formula encoded str as UTF-8)
    for name in ("alice/001.jpg", "Zoë/été.png", "李小龙/1.jpg"):
        old = int.from_bytes(hashlib.sha256(f"0\0{name}".encode()).digest()[:8], "big") / 2**64
        assert hash_fraction(name, 0) == old
    latin1 = os.fsdecode(b"ren\xe9/caf\xe9.jpg")  # bytes from another encoding, as os.walk gives them
    assert 0 <= hash_fraction(latin1, 0) < 1
    assert assign_splits([latin1, "a/1.jpg"], 0.7, 0.15, 0.15, seed=0)[1] == assign_splits(["a/1.jpg"], 0.7, 0.15,
                                                                                              0.15, seed=0)[0]


def test_names_in_any_script_or_encoding_reach_csv_json_and_figures(tmp_path):
    from facecls.io import atomic_write_json, atomic_write_text, csv_text
    from facecls.plots import display_name, plot_confusion

    names = ["Zoë Ångström", "李小龙", os.fsdecode(b"ren\xe9"), "-dash", "new\nline", 'quo"te,comma']
    text = atomic_write_text(tmp_path / "t.csv", csv_text(["class"], [[n] for n in names])).read_text("utf-8")
    assert "Zoë Ångström" in text and "李小龙" in text and "ren\\udce9" in text and '"quo""te,comma"' in text
    atomic_write_json(tmp_path / "t.json", {"classes": names})
    assert "\\udce9" in (tmp_path / "t.json").read_text()
    png = plot_confusion(np.eye(len(names), dtype=int), names, tmp_path / "cm.png")
    assert Image.open(png).size[0] > 100 and display_name(names[2]) == "ren\\udce9"


def test_a_resized_recompressed_copy_in_another_split_is_reported_and_dropped(tmp_path, tiny_faces, cache_env):
    import shutil

    from helpers import TINY, finish_cli, read_json, start_cli

    root = tmp_path / "faces"
    for split in ("train", "val", "test"):
        shutil.copytree(tiny_faces, root / split)  # every class in every split…
    for split, keep in (("train", slice(0, 8)), ("val", slice(8, 10)), ("test", slice(10, 12))):
        for class_dir in (root / split).iterdir():
            for f in sorted(class_dir.iterdir())[:keep.start] + sorted(class_dir.iterdir())[keep.stop:]:
                f.unlink()  # …with its own images: no copies so far
    source = sorted((root / "train").iterdir())[0]
    original = sorted(source.iterdir())[0]
    image = Image.open(original).convert("RGB")
    copy = root / "test" / source.name / "copy_of_a_train_image.jpg"
    image.resize((image.width * 3 // 4, image.height * 3 // 4)).save(copy, quality=60)  # resized + recompressed

    runs = [start_cli("train", "data=imagefolder", f"data.root={root}", *TINY, "trainer.max_epochs=1",
                      f"data.drop_duplicates={drop}", f"hydra.run.dir={tmp_path / drop}", cwd=tmp_path, env=cache_env)
            for drop in ("false", "true")]  # side by side
    for run in runs:
        finish_cli(run)
    kept, dropped = read_json(tmp_path / "false" / "metrics.json"), read_json(tmp_path / "true" / "metrics.json")
    assert kept["duplicates_across_splits"] == 0 and kept["near_duplicates_across_splits"] >= 1
    example = " ".join(kept["near_duplicate_examples"][0])
    assert "copy_of_a_train_image.jpg" in example and original.name in example
    assert dropped["test_size"] == kept["test_size"] - 1
    assert "near-duplicate image(s)" in (tmp_path / "false" / "train.log").read_text()


def test_odd_file_names_train_are_listed_and_leave_other_splits_alone(tmp_path, tiny_faces, cache_env):
    import shutil

    from facecls.data.sources import image_folder

    from helpers import TINY, read_json, run_cli

    root = tmp_path / "faces"
    shutil.copytree(tiny_faces, root)
    before = dict(zip(image_folder(root).files, assign_splits(image_folder(root).files, 0.7, 0.15, 0.15, seed=0)))
    classes = sorted(p.name for p in root.iterdir())
    odd = [os.fsencode(root / classes[0]) + b"/caf\xe9.jpg",            # not UTF-8 (Latin-1 bytes)
           os.fsencode(root / classes[1]) + b"/two\nlines.jpg",          # a newline
           os.fsencode(root / classes[2]) + b"/-starts-with-dash.jpg",   # a leading dash
           os.fsencode(root / classes[0]) + b"/broken \xff.jpg"]          # not UTF-8 and not an image
    source = sorted((root / classes[0]).iterdir())[0]
    for raw in odd[:3]:
        shutil.copyfile(source, raw)
    with open(odd[3], "wb") as f:
        f.write(b"not an image")

    run_cli("train", "data=imagefolder", f"data.root={root}", *TINY, "trainer.max_epochs=1",
            f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=cache_env)
    metrics = read_json(tmp_path / "run" / "metrics.json")
    # metrics.json escapes the byte as \udcff; read back, it is the name Python gave the file
    assert metrics["skipped_files"] == 1 and os.fsdecode(b"broken \xff.jpg") in next(iter(metrics["skipped"]))
    assert metrics["train_size"] + metrics["val_size"] + metrics["test_size"] == len(before) + 3
    after = dict(zip(image_folder(root).files, assign_splits(image_folder(root).files, 0.7, 0.15, 0.15, seed=0)))
    assert all(after[f] == split for f, split in before.items())  # the other files keep their split



def cartoon_face(rng, size: int = 32) -> Image.Image:
    """An upright cartoon face (hair on top, two eyes, a mouth below), colours and place jittered:
    upright and upside down are easy to tell apart, even at 16 px."""
    from PIL import ImageDraw

    im = Image.new("RGB", (size, size), tuple(rng.randrange(60, 200) for _ in range(3)))
    draw = ImageDraw.Draw(im)
    dx, dy = rng.randint(-3, 3), rng.randint(-2, 2)
    skin = (rng.randrange(170, 250), rng.randrange(120, 200), rng.randrange(90, 160))
    draw.ellipse([6 + dx, 5 + dy, 26 + dx, 29 + dy], fill=skin)
    draw.chord([6 + dx, 3 + dy, 26 + dx, 17 + dy], 180, 360, fill=tuple(rng.randrange(0, 90) for _ in range(3)))
    for x in (11, 19):
        draw.ellipse([x - 2 + dx, 13 + dy, x + 2 + dx, 17 + dy], fill=(20, 20, 40))
    draw.rectangle([12 + dx, 23 + dy, 20 + dx, 25 + dy], fill=(180, 30, 40))
    return im


def test_training_learns_what_the_orientation_tag_shows(tmp_path, monkeypatch):
    """Two classes with the very same stored pixels: every face is stored sideways, tagged
    orientation 6 ("turn clockwise": it shows upright) in class `upright` and 8 ("turn
    anticlockwise": it shows upside down) in class `upside_down`. Only decoding that applies
    the tag can tell the classes apart: ignoring it gives identical inputs, at best chance.
    Trained and predicted in-process (the same decoding; two CLI starts cost ~8 s here)."""
    import random

    from PIL import ImageOps

    from facecls.config.compose import compose
    from facecls.inspect.predict import run_predict
    from facecls.training.run import run_training

    from helpers import compose_tiny_train, read_csv, read_json

    root, loose = tmp_path / "faces", tmp_path / "loose"
    for folder in (root / "upright", root / "upside_down", loose):
        folder.mkdir(parents=True)
    rng = random.Random(0)
    faces = [cartoon_face(rng) for _ in range(40)]
    for i, face in enumerate(faces):
        stored = face.transpose(Image.Transpose.ROTATE_90)  # the pixels on disk: sideways
        for cls, tag in (("upright", 6), ("upside_down", 8)):
            exif = Image.Exif()
            exif[0x0112] = tag
            stored.save(root / cls / f"face_{i:03d}.png", exif=exif.tobytes())
    with Image.open(root / "upright" / "face_000.png") as a, Image.open(root / "upside_down" / "face_000.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))  # identical pixels in both classes
        assert np.array_equal(np.asarray(ImageOps.exif_transpose(a)), np.asarray(faces[0]))
        assert np.array_equal(np.asarray(ImageOps.exif_transpose(b)), np.asarray(faces[0].rotate(180)))

    monkeypatch.setenv("FACECLS_CACHE_DIR", str(tmp_path / "cache"))  # predict's cache too
    run_training(compose_tiny_train(root, tmp_path / "cache", "trainer.max_epochs=4"), tmp_path / "run")
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["test_size"] >= 8 and metrics["test_acc"] >= 0.9, metrics  # identical inputs: ~0.5

    # predict: a tagged file scores exactly as the same face stored upright without a tag does
    (loose / "tagged.png").write_bytes((root / "upside_down" / "face_000.png").read_bytes())
    faces[0].rotate(180).save(loose / "plain_upside_down.png")
    faces[0].transpose(Image.Transpose.ROTATE_90).save(loose / "untagged_sideways.png")
    run_predict(compose("predict", [f"ckpt={tmp_path / 'run' / 'checkpoints' / 'best.pt'}", f"input={loose}",
                                    f"out={tmp_path / 'predict'}", "progress=false"]))
    rows = {r["file"]: r for r in read_csv(tmp_path / "predict" / "predictions.csv")}
    scores = {f: (r["top1"], r["p1"], r["top2"], r["p2"]) for f, r in rows.items()}
    assert scores["tagged.png"] == scores["plain_upside_down.png"]
    assert scores["tagged.png"] != scores["untagged_sideways.png"]
    assert rows["tagged.png"]["predicted"] == "upside_down"

"""A careless user and a hostile file: every case is a logged skip or a one-line error."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from facecls.data.decode import decode_images
from facecls.data.preprocess import Preprocess

from helpers import TINY, cli_env, finish_cli, read_json, run_cli, start_cli


def _rgb(size=(40, 30), seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8))


def write_16bit_png(path):
    Image.fromarray((np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50)).save(path)


def write_cmyk_jpeg(path):
    _rgb().convert("CMYK").save(path, "JPEG")


def write_animated_gif(path):
    frames = [_rgb(seed=i).convert("P") for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)


def write_palette_png_with_transparency(path):
    image = _rgb().convert("P")
    image.info["transparency"] = 0
    image.save(path, transparency=0)


def write_huge_jpeg(path):
    Image.new("RGB", (8000, 8000), (120, 80, 60)).save(path, "JPEG", quality=50)


def write_tiny_png(path):
    Image.new("RGB", (1, 1), (200, 10, 10)).save(path)


def write_grayscale(path):
    _rgb().convert("L").save(path)


def write_rgba(path):
    _rgb().convert("RGBA").save(path)


def write_truncated_jpeg(path):
    _rgb((200, 200)).save(path, "JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_zero_bytes(path):
    path.write_bytes(b"")


def write_text_as_jpeg(path):
    path.write_text("this is not an image")


def write_corrupt_header(path):
    path.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200))


READABLE = {"16-bit.png": write_16bit_png, "cmyk.jpg": write_cmyk_jpeg, "animated.gif": write_animated_gif,
            "palette-transparent.png": write_palette_png_with_transparency, "huge.jpg": write_huge_jpeg,
            "tiny.png": write_tiny_png, "gray.jpg": write_grayscale, "rgba.png": write_rgba,
            "naïve café ü.jpg": write_grayscale}
UNREADABLE = {"truncated.jpg": write_truncated_jpeg, "zero.jpg": write_zero_bytes,
              "text.jpg": write_text_as_jpeg, "corrupt.jpg": write_corrupt_header}


@pytest.mark.parametrize("name", sorted(READABLE))
def test_odd_but_valid_images_decode_to_rgb(name, tmp_path):
    READABLE[name](tmp_path / name)
    images, keep, skipped = decode_images(tmp_path, [name], Preprocess(size=16), cache_dir=None, progress=False)
    assert skipped == {} and keep.tolist() == [True]
    assert images.shape == (1, 3, 16, 16) and images.dtype.is_floating_point is False
    if name == "16-bit.png":  # scaled to 8 bits, not clipped to white
        assert 0 < images.float().mean() < 250


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_broken_files_are_skipped_with_a_reason(name, tmp_path):
    _rgb().save(tmp_path / "good.png")
    UNREADABLE[name](tmp_path / name)
    images, keep, skipped = decode_images(tmp_path, ["good.png", name], Preprocess(size=16), None, progress=False)
    assert keep.tolist() == [True, False] and list(skipped) == [name] and skipped[name]
    assert images.shape[0] == 1


def test_permission_denied_file_is_skipped(tmp_path, monkeypatch):
    # chmod 000 does not stop root (CI may run as root), so the refusal is simulated.
    import facecls.data.decode as decode

    real_open = decode.Image.open

    def guarded_open(path, *args, **kwargs):
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(decode.Image, "open", guarded_open)
    _rgb().save(tmp_path / "locked.png")
    _, keep, skipped = decode_images(tmp_path, ["locked.png"], Preprocess(size=16), None, progress=False)
    assert keep.tolist() == [False] and "Permission" in skipped["locked.png"]


def test_messy_folder_trains_and_reports_every_skip(tmp_path, tiny_faces, cache_env):
    """All hazards at once in a real `facecls train` run: non-ASCII and space-containing class
    names, hidden files, a symlink loop, odd formats, broken files."""
    root = tmp_path / "faces"
    shutil.copytree(tiny_faces, root)
    classes = sorted(p.name for p in root.iterdir())
    os.rename(root / classes[0], root / "Zoë Ångström")
    odd = root / classes[1]
    for name, write in {**READABLE, **UNREADABLE}.items():
        if name != "huge.jpg":  # decoding 8000² once above is enough
            write(odd / name)
    (odd / ".DS_Store").write_bytes(b"\0\1")
    (odd / "Thumbs.db").write_bytes(b"\0\1")
    (odd / "notes.txt").write_text("hello")  # not an image either: skipped and listed too
    os.symlink(root, odd / "loop")  # a folder symlink pointing up: must not be followed
    proc = run_cli("train", "data=imagefolder", f"data.root={root}", *TINY, "trainer.max_epochs=1",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=cache_env)
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert sorted(metrics["skipped"]) == sorted(f"{classes[1]}/{n}" for n in [*UNREADABLE, "notes.txt"])
    assert metrics["skipped_files"] == len(UNREADABLE) + 1
    assert f"Skipped {len(UNREADABLE) + 1} unreadable file(s)" in proc.stdout + proc.stderr
    assert metrics["train_size"] + metrics["val_size"] + metrics["test_size"] == 36 + len(READABLE) - 1
    assert "Zoë Ångström" in (tmp_path / "run" / "checkpoints" / "best.pt").read_bytes().decode("utf-8", "ignore")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # two CLI runs (~14 s); test_photos checks the same report on photos
def test_duplicates_across_splits_are_reported_and_can_be_dropped(tmp_path, tiny_faces, cache_env):
    root = tmp_path / "faces"
    shutil.copytree(tiny_faces, root)
    first = sorted(root.iterdir())[0]
    originals = sorted(first.glob("*.jpg"))
    for i, f in enumerate(originals):  # copies under new names land in other splits by hash
        shutil.copy(f, first / f"copy_{i}.jpg")
    runs = {}
    for drop in ("false", "true"):
        run_cli("train", "data=imagefolder", f"data.root={root}", *TINY, "trainer.max_epochs=1",
                f"data.drop_duplicates={drop}", f"hydra.run.dir={tmp_path / drop}", cwd=tmp_path, env=cache_env)
        runs[drop] = read_json(tmp_path / drop / "metrics.json")
    kept, dropped = runs["false"], runs["true"]
    assert kept["duplicates_across_splits"] > 0
    assert all(len({m.split(":")[0] for m in group}) > 1 for group in kept["duplicate_examples"])
    assert kept["train_size"] == dropped["train_size"]
    assert dropped["val_size"] + dropped["test_size"] < kept["val_size"] + kept["test_size"]


def test_a_single_image_class_trains_with_a_warning(tmp_path, tiny_faces, caplog):
    """In-process: a whole CLI run cost ~10 s here (that a CLI run prints facecls' warnings is
    checked by test_loggers' test_unreachable_tracking_server_costs_nothing)."""
    import logging

    from facecls.training.run import run_training

    from helpers import compose_tiny_train

    root = tmp_path / "faces"
    shutil.copytree(tiny_faces, root)
    (root / "solo").mkdir()
    shutil.copy(next((root / sorted(os.listdir(tiny_faces))[0]).glob("*.jpg")), root / "solo" / "one.jpg")
    with caplog.at_level(logging.WARNING, logger="facecls"):
        run_training(compose_tiny_train(root, tmp_path / "cache", "trainer.max_epochs=1"), tmp_path / "r")  # trains
    assert "fewer than 3 images" in caplog.text and "solo (1)" in caplog.text


MISTAKES = {"output dir is a file": "is a file", "ckpt missing": "does not exist",
            "ckpt not a checkpoint": "not a readable checkpoint", "resume not a run": "not a facecls run dir"}


def mistake(case: str, folder) -> list[str]:
    """The command line of ``case``, with what it needs written into ``folder``."""
    if case == "output dir is a file":
        (folder / "file").write_text("x")
        return ["train", f"paths.output_dir={folder / 'file' / 'runs'}"]
    if case == "ckpt missing":
        return ["eval", f"ckpt={folder / 'nope.pt'}"]
    if case == "ckpt not a checkpoint":
        (folder / "x.pt").write_text("hello")
        return ["eval", f"ckpt={folder / 'x.pt'}"]
    return ["train", f"resume={folder}"]


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory):
    """{case: its finished `facecls` process}, each in its own folder with its own cache, all side
    by side: each ends soon after Python starts (most of its time; two cores)."""
    folders = {case: tmp_path_factory.mktemp("mistake") for case in MISTAKES}
    jobs = {case: start_cli(*mistake(case, folder), cwd=folder, env=cli_env(folder / "cache"))
            for case, folder in folders.items()}
    return {case: finish_cli(job, check=False) for case, job in jobs.items()}


@pytest.mark.parametrize("case", MISTAKES)
def test_more_user_mistakes_are_one_line(case, mistakes):
    proc = mistakes[case]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and MISTAKES[case] in lines[0], proc.stderr

"""Tests for the procedurally rendered synthetic face dataset."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecls.data import synthetic
from facecls.data.synthetic import DEFAULT_NAMES, class_names, make_identities, render_face, write_dataset

SMALL = dict(num_classes=3, images_per_class=4, image_size=32, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    a = _files(write_dataset(tmp_path / "a", seed=7, **SMALL))
    b = _files(write_dataset(tmp_path / "b", seed=7, **SMALL))
    c = _files(write_dataset(tmp_path / "c", seed=8, **SMALL))
    assert a == b
    assert a.keys() == c.keys()  # same layout...
    assert all(a[k] != c[k] for k in a)  # ...but every image changes with the seed


def test_folder_tree_layout(tmp_path):
    out = write_dataset(tmp_path / "faces", num_classes=4, images_per_class=5, image_size=32, progress=False)
    assert out == tmp_path / "faces"
    assert sorted(p.name for p in out.iterdir()) == sorted(class_names(4))
    for class_dir in out.iterdir():
        names = sorted(p.name for p in class_dir.iterdir())
        assert names == [f"{class_dir.name}_{i:03d}.jpg" for i in range(5)]
    # The temporary build directory must have been renamed away, not left beside the output.
    assert [p.name for p in tmp_path.iterdir()] == ["faces"]


def test_files_are_rgb_jpegs_of_requested_size(tmp_path):
    out = write_dataset(tmp_path / "faces", num_classes=2, images_per_class=3, image_size=40, progress=False)
    files = list(out.rglob("*.jpg"))
    assert len(files) == 6
    for f in files:
        with Image.open(f) as img:
            assert img.format == "JPEG"
            assert img.mode == "RGB"
            assert img.size == (40, 40)
            img.load()  # decodes the full image, failing on a truncated file


def test_images_within_a_class_differ(tmp_path):
    out = write_dataset(tmp_path / "faces", num_classes=2, images_per_class=6, image_size=48, progress=False)
    for class_dir in out.iterdir():
        imgs = [np.asarray(Image.open(f), dtype=np.float32) for f in sorted(class_dir.iterdir())]
        for i in range(len(imgs)):
            for j in range(i + 1, len(imgs)):
                # Pose, lighting and background change, so images are far apart, not just JPEG-noise apart.
                assert np.abs(imgs[i] - imgs[j]).mean() > 10


def test_identities_are_distinct_beyond_per_image_noise():
    # Average many renders per identity; class means should differ clearly more between
    # identities than the means of two disjoint halves of the same identity's images do.
    ids, n, size = make_identities(4, seed=3), 60, 32
    halves = []
    for k, ident in enumerate(ids):
        imgs = np.stack([np.asarray(render_face(ident, np.random.default_rng([99, k, j]), size), dtype=np.float32)
                         for j in range(n)])
        # Only the central region: the border is mostly random background.
        imgs = imgs[:, size // 4: -size // 4, size // 4: -size // 4]
        halves.append((imgs[: n // 2].mean(0), imgs[n // 2:].mean(0)))
    within = np.mean([np.abs(a - b).mean() for a, b in halves])
    between = np.mean([np.abs(halves[i][0] - halves[j][1]).mean() for i in range(4) for j in range(4) if i != j])
    assert between > 1.3 * within


def test_render_face_is_deterministic_given_rng():
    ident = make_identities(2, seed=0)[1]
    a = render_face(ident, np.random.default_rng(5), 24)
    b = render_face(ident, np.random.default_rng(5), 24)
    assert a.size == (24, 24) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes()


def test_make_identities_is_seeded_and_prefix_stable():
    assert make_identities(5, seed=1) == make_identities(5, seed=1)
    # Asking for more classes must not change the earlier identities (caches stay comparable).
    assert make_identities(8, seed=1)[:5] == make_identities(5, seed=1)
    assert make_identities(5, seed=1) != make_identities(5, seed=2)
    # No two people share every trait (names aside).
    traits = {tuple(v for k, v in vars(i).items() if k != "name") for i in make_identities(11, seed=0)}
    assert len(traits) == 11


def test_class_names_are_distinct_and_filesystem_safe():
    assert len(DEFAULT_NAMES) >= 40
    names = class_names(len(DEFAULT_NAMES) * 2 + 3)
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z0-9_]+", n) for n in names)
    assert class_names(3) == DEFAULT_NAMES[:3]


@pytest.mark.parametrize("kwargs, word", [
    (dict(num_classes=1), "num_classes"),
    (dict(images_per_class=0), "images_per_class"),
    (dict(image_size=8), "image_size"),
    (dict(seed=-1), "seed"),
])
def test_invalid_arguments_raise_value_error(tmp_path, kwargs, word):
    with pytest.raises(ValueError, match=word):
        write_dataset(tmp_path / "faces", **{**SMALL, **kwargs})
    assert not (tmp_path / "faces").exists()


def test_existing_non_empty_dir_is_refused_but_empty_dir_is_filled(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_dataset(full, **SMALL)
    assert [p.name for p in full.iterdir()] == ["keep.txt"]

    empty = tmp_path / "empty"
    empty.mkdir()
    write_dataset(empty, **SMALL)
    assert len(list(empty.rglob("*.jpg"))) == 12


def test_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic.render_face

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_face", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "faces", **SMALL)
    assert list(tmp_path.iterdir()) == []


def _codes(identities) -> np.ndarray:
    return np.array([synthetic._visible_codes(i) for i in identities])


def test_200_identities_differ_in_several_visible_traits():
    for seed in (0, 1):
        people = make_identities(200, seed)
        assert len({p.name for p in people}) == 200
        codes = _codes(people)
        differ = (codes[:, None] != codes[None]).sum(-1)
        np.fill_diagonal(differ, len(codes[0]))
        assert differ.min() >= synthetic.MIN_TRAIT_DIFFERENCES


def test_too_close_people_are_redrawn_without_moving_earlier_ones(monkeypatch):
    plain = make_identities(30, seed=4)
    monkeypatch.setattr(synthetic, "MIN_TRAIT_DIFFERENCES", 9)  # forces redraws within 30 people
    strict = make_identities(30, seed=4)
    codes = _codes(strict)
    differ = (codes[:, None] != codes[None]).sum(-1) + 99 * np.eye(30, dtype=int)
    assert differ.min() >= 9
    assert strict != plain and strict[0] == plain[0]
    assert make_identities(40, seed=4)[:30] == strict  # still prefix-stable


def test_200_identities_are_distinguishable_in_pixels():
    people, size = make_identities(200, seed=0), 32
    centre = (slice(None), slice(size // 4, -size // 4), slice(size // 4, -size // 4))

    def render(ident, stream):
        return np.asarray(render_face(ident, np.random.default_rng(stream), size), dtype=np.float32)

    # Same pose, lighting and background for everyone: whatever differs is the person.
    alike = np.stack([render(p, 123) for p in people])[centre].reshape(200, -1)
    gaps = np.abs(alike[:, None] - alike[None]).mean(-1) + 1e9 * np.eye(200)
    assert gaps.min() > 2.0  # grey levels, averaged over the face region
    # Across nuisance: the mean of 4 renders finds the same person's other 4 far above chance (0.5%).
    n = 4
    renders = np.stack([[render(p, [5, k, j]) for j in range(2 * n)] for k, p in enumerate(people)])
    renders = renders[:, :, size // 4: -size // 4, size // 4: -size // 4].reshape(200, 2 * n, -1)
    first, second = renders[:, :n].mean(1), renders[:, n:].mean(1)
    nearest = ((first[:, None] - second[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == np.arange(200)).mean() >= 0.05  # >= 10x chance (measured 0.085)


def test_lfw_layout_numbers_from_0001_with_the_same_pixels(tmp_path):
    plain = write_dataset(tmp_path / "plain", **SMALL)
    lfw = write_dataset(tmp_path / "lfw", layout="lfw", **SMALL)
    for name in class_names(3):
        assert sorted(p.name for p in (lfw / name).iterdir()) == [f"{name}_{i:04d}.jpg" for i in range(1, 5)]
        assert (lfw / name / f"{name}_0001.jpg").read_bytes() == (plain / name / f"{name}_000.jpg").read_bytes()
    with pytest.raises(ValueError, match="layout"):
        write_dataset(tmp_path / "bad", layout="flat", **SMALL)

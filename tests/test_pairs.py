"""LFW pairs files: reading against a hand-made LFW-layout tree, writing, drawing, bad input."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from facecls.data.synthetic import write_dataset
from facecls.errors import UserError
from facecls.faces.pairs import Pair, draw_pairs, pairs_text, read_pairs, write_pairs

# person -> the image files it has (numbers and extensions as LFW names them; mixed on purpose)
TREE = {"alice": ["0001.png", "0002.png", "0003.png"], "bob": ["0001.jpg", "0002.jpg"],
        "carol": ["0001.jpeg"], "dave": ["0001.png", "0002.PNG"]}

VIEW2 = "2\t1\nalice\t1\t2\nalice\t3\tbob\t1\nbob\t1\t2\ncarol\t1\tdave\t2\n"
VIEW1 = "2\nalice 1 3\ndave 1 2\nalice 2 carol 1\nbob 2 dave 1\n"


@pytest.fixture
def root(tmp_path) -> Path:
    for person, files in TREE.items():
        (tmp_path / "lfw" / person).mkdir(parents=True)
        for suffix in files:
            Image.new("RGB", (4, 4), (len(person) * 20, 0, 0)).save(
                tmp_path / "lfw" / person / f"{person}_{suffix}", format="PNG")
    (tmp_path / "lfw" / "alice" / "notes.txt").write_text("not an image")
    return tmp_path / "lfw"


def image(root: Path, person: str, number: int) -> Path:
    return next(root.joinpath(person).glob(f"{person}_{number:04d}.*"))


def write(tmp_path: Path, text: str, name: str = "pairs.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_view2_file_gives_the_known_pairs(root, tmp_path):
    pairs = read_pairs(write(tmp_path, VIEW2), root)
    assert pairs == [
        Pair(image(root, "alice", 1), image(root, "alice", 2), True, 0),
        Pair(image(root, "alice", 3), image(root, "bob", 1), False, 0),
        Pair(image(root, "bob", 1), image(root, "bob", 2), True, 1),
        Pair(image(root, "carol", 1), image(root, "dave", 2), False, 1),
    ]
    assert pairs[3].path_b.name == "dave_0002.PNG" and pairs[3].path_a.name == "carol_0001.jpeg"


def test_view1_file_is_one_fold(root, tmp_path):
    pairs = read_pairs(write(tmp_path, VIEW1, "pairsDevTest.txt"), root)
    assert [(p.path_a.stem, p.path_b.stem, p.same, p.fold) for p in pairs] == [
        ("alice_0001", "alice_0003", True, 0), ("dave_0001", "dave_0002", True, 0),
        ("alice_0002", "carol_0001", False, 0), ("bob_0002", "dave_0001", False, 0)]


def test_write_then_read_round_trips(root, tmp_path):
    pairs = read_pairs(write(tmp_path, VIEW2), root)
    out = write_pairs(tmp_path / "out" / "pairs.txt", pairs, folds=2, per_fold=1)
    assert out.read_text() == VIEW2
    assert read_pairs(out, root) == pairs
    with pytest.raises(ValueError, match="fold 0 has 1 same-person pairs, the header says 2"):
        pairs_text(pairs, folds=2, per_fold=2)


def test_writing_a_file_outside_the_lfw_layout_is_refused(tmp_path):
    pair = Pair(tmp_path / "alice" / "a.jpg", tmp_path / "alice" / "b.jpg", True, 0)
    with pytest.raises(UserError, match="not named <person>/<person>_<4 digits>"):
        pairs_text([pair], folds=1, per_fold=1)


@pytest.mark.parametrize("text, line, match", [
    ("2\t1\nzed\t1\t2\nalice\t3\tbob\t1\nbob\t1\t2\ncarol\t1\tdave\t2\n", 2, "no folder for person 'zed'"),
    ("2\t1\nalice\t1\t7\nalice\t3\tbob\t1\nbob\t1\t2\ncarol\t1\tdave\t2\n", 2, "'alice' has no image number 7"),
    ("2\t1\nalice\t1\t2\nalice\t3\tbob\t1\nbob\t1\t2\ncarol\t1\tdave\t9\n", 5, "'dave' has no image number 9"),
    ("2\t1\nalice\t1\nalice\t3\tbob\t1\nbob\t1\t2\ncarol\t1\tdave\t2\n", 2, "expected a same-person line"),
    ("2\t1\nalice\t1\t2\nalice\t3\tbob\nbob\t1\t2\ncarol\t1\tdave\t2\n", 3, "expected a different-person line"),
    ("2\t1\nalice\tone\t2\nalice\t3\tbob\t1\nbob\t1\t2\ncarol\t1\tdave\t2\n", 2, "whole numbers"),
    ("2\t2\nalice\t1\t2\nalice\t3\tbob\t1\nbob\t1\t2\ncarol\t1\tdave\t2\n", 5, "promises 2 fold.* = 8 pair lines"),
    ("1\t1\nalice\t1\t2\nalice\t3\tbob\t1\nbob\t1\t2\n", 4, "promises 1 fold.* = 2 pair lines, the file has 3"),
    ("ten 300\nalice\t1\t2\n", 1, "whole numbers"),
    ("2 1 3\nalice\t1\t2\n", 1, "the header must be"),
])
def test_bad_lines_name_the_file_and_line(root, tmp_path, text, line, match):
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=match) as err:
        read_pairs(path, root)
    message = str(err.value)
    assert f"{path} line {line}:" in message and "\n" not in message and " — " in message


def test_missing_or_empty_file_and_missing_root(root, tmp_path):
    with pytest.raises(UserError, match="cannot read the pairs file"):
        read_pairs(tmp_path / "nope.txt", root)
    with pytest.raises(UserError, match="is empty"):
        read_pairs(write(tmp_path, "\n"), root)
    with pytest.raises(UserError, match="does not exist — check data.root"):
        read_pairs(write(tmp_path, VIEW2), tmp_path / "missing")


def people(n: int, images: int) -> dict[str, list[str]]:
    return {f"p{k:03d}": [f"/faces/p{k:03d}/p{k:03d}_{j:04d}.jpg" for j in range(1, images + 1)] for k in range(n)}


def person(path: Path) -> str:
    return path.parent.name


def test_drawn_pairs_are_balanced_distinct_identity_disjoint_and_seeded():
    files = people(40, 5)
    pairs = draw_pairs(files, folds=4, pairs_per_fold=30, seed=3)
    assert len(pairs) == 4 * 2 * 30
    assert pairs == draw_pairs(dict(reversed(files.items())), folds=4, pairs_per_fold=30, seed=3)  # order-free
    assert pairs != draw_pairs(files, folds=4, pairs_per_fold=30, seed=4)
    owner: dict[str, int] = {}
    for fold in range(4):
        chosen = [p for p in pairs if p.fold == fold]
        assert sum(p.same for p in chosen) == sum(not p.same for p in chosen) == 30
        assert len({frozenset((p.path_a, p.path_b)) for p in chosen}) == 60  # no pair twice
        for p in chosen:
            assert p.path_a != p.path_b and (person(p.path_a) == person(p.path_b)) == p.same
            for who in (person(p.path_a), person(p.path_b)):
                assert owner.setdefault(who, fold) == fold  # a person lives in one fold only


def test_drawing_uses_every_pair_when_asked_for_all_of_them():
    # Two people with 2 images each per fold: exactly 2 same pairs and 4 different pairs exist.
    pairs = draw_pairs(people(4, 2), folds=2, pairs_per_fold=2, seed=0)
    assert sum(p.same for p in pairs) == 4 and len(pairs) == 8


@pytest.mark.parametrize("folds, per_fold, match", [
    (10, 5, "cannot draw 10 identity-disjoint folds of 5 same \\+ 5 different pairs from 5 people "
            "\\(5 with 2\\+ images, 15 images\\): they allow 2 fold\\(s\\) of 5 —"),
    (2, 50, "they allow 2 folds of 6 —"),
    (3, 1, "they allow 2 fold\\(s\\) of 1 —"),
])
def test_too_few_people_or_images_says_what_is_possible(folds, per_fold, match):
    with pytest.raises(UserError, match=match):
        draw_pairs(people(5, 3), folds=folds, pairs_per_fold=per_fold)


def test_single_image_people_only_make_different_pairs():
    files = {**people(2, 3), **{f"solo{k}": [f"/faces/solo{k}/solo{k}_0001.jpg"] for k in range(4)}}
    pairs = draw_pairs(files, folds=2, pairs_per_fold=3, seed=1)
    assert all(person(p.path_a).startswith("p") for p in pairs if p.same)
    with pytest.raises(UserError, match="no folds at all"):
        draw_pairs({f"solo{k}": [f"/x/solo{k}_0001.jpg"] for k in range(4)}, folds=1, pairs_per_fold=1)


def test_synthetic_lfw_tree_draw_write_read(tmp_path):
    root = write_dataset(tmp_path / "faces", num_classes=6, images_per_class=3, image_size=16, progress=False,
                         layout="lfw")
    files = {d.name: sorted(str(f) for f in d.iterdir()) for d in root.iterdir()}
    pairs = draw_pairs(files, folds=3, pairs_per_fold=2, seed=0)
    path = write_pairs(tmp_path / "pairs.txt", pairs, folds=3, per_fold=2)
    assert path.read_text().splitlines()[0] == "3\t2"
    assert read_pairs(path, root) == pairs

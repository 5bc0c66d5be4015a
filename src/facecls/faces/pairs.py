"""LFW ``pairs.txt`` files: read them against an image tree, write them, and draw new ones.

The format (LFW View 2): a first line ``10 300`` (folds, pairs of each kind per fold), then for
each fold 300 same-person lines ``name i j`` followed by 300 different-person lines
``name1 i name2 j``. View 1 files (``pairsDevTrain.txt``, ``pairsDevTest.txt``) have a first line
with one number N, then N same lines and N different lines: one fold. Image numbers resolve to
``<root>/<name>/<name>_<4-digit number>.<ext>`` with any common image extension.

Drawn pairs keep folds identity-disjoint, as LFW's are: a person appears in one fold only, so a
threshold fitted on the other folds has never seen the people it is judged on.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from facecls.errors import UserError
from facecls.io import atomic_write_text

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".heic")


@dataclass(frozen=True)
class Pair:
    """Two image files, whether they show one person, and the fold (0-based) the pair belongs to."""

    path_a: Path
    path_b: Path
    same: bool
    fold: int


# --------------------------------------------------------------------------- reading

class _Images:
    """Image files per person under ``root``, each folder listed once (a 6,000-line file names
    the same people over and over)."""

    def __init__(self, root: Path):
        self.root = root
        self._cache: dict[str, dict[int, Path] | None] = {}

    def numbers(self, name: str) -> dict[int, Path] | None:
        if name not in self._cache:
            folder = self.root / name
            if not folder.is_dir():
                self._cache[name] = None
            else:
                pattern = re.compile(rf"{re.escape(name)}_(\d{{4}})(\.[A-Za-z]+)")
                found: dict[int, Path] = {}
                for entry in sorted(os.listdir(folder)):
                    match = pattern.fullmatch(entry)
                    if match and match.group(2).lower() in IMAGE_EXTENSIONS:
                        found.setdefault(int(match.group(1)), folder / entry)
                self._cache[name] = found
        return self._cache[name]


def _ints(fields: Sequence[str], where: str, what: str) -> list[int]:
    try:
        return [int(x) for x in fields]
    except ValueError:
        raise UserError(f"{where}: {what} must be whole numbers, got {' '.join(fields)!r} — fix that line.") from None


def read_pairs(path: str | Path, root: str | Path) -> list[Pair]:
    """Read a View 2 (``10 300``) or View 1 (``N``) pairs file; resolve each image under ``root``.

    Raises UserError naming the file and line for a malformed header or line, a line count that
    does not match the header, a person with no folder under ``root``, or a missing image number.
    """
    path, root = Path(path), Path(root)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read the pairs file {path} ({err.strerror or err}) — check pairs=.") from None
    lines = [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise UserError(f"{path} is empty — a pairs file starts with '10 300' (folds, pairs per fold).")
    header_line, header = lines[0]
    where = f"{path} line {header_line}"
    counts = _ints(header, where, "the header's counts")
    if len(counts) not in (1, 2) or min(counts) < 1:
        raise UserError(f"{where}: the header must be 'FOLDS PAIRS' (View 2, e.g. '10 300') or 'PAIRS' (View 1), "
                        f"got {' '.join(header)!r} — fix the first line.")
    folds, per_fold = (1, counts[0]) if len(counts) == 1 else (counts[0], counts[1])
    body = lines[1:]
    expected = folds * 2 * per_fold
    if len(body) != expected:
        # Point at the first line too many, or at the end of a file that stops short.
        line = body[expected][0] if len(body) > expected else (body[-1][0] if body else header_line)
        raise UserError(f"{path} line {line}: the header promises {folds} fold(s) x 2 x {per_fold} = {expected} pair "
                        f"lines, the file has {len(body)} — fix the header or the file.")
    if not root.is_dir():
        raise UserError(f"the image folder {root} for {path} does not exist — check data.root.")

    images = _Images(root)

    def image(name: str, number: int, where: str) -> Path:
        found = images.numbers(name)
        if found is None:
            raise UserError(f"{where}: no folder for person {name!r} under {root} — check data.root or the pairs file.")
        if number not in found:
            have = f"it has {min(found):04d}..{max(found):04d}" if found else "it holds no <name>_NNNN images"
            raise UserError(f"{where}: {name!r} has no image number {number} ({name}_{number:04d}.jpg/.png/…) in "
                            f"{root / name}; {have} — check the pairs file or the image tree.")
        return found[number]

    pairs = []
    for index, (number, fields) in enumerate(body):
        fold, same = index // (2 * per_fold), index % (2 * per_fold) < per_fold
        where = f"{path} line {number}"
        if same and len(fields) != 3:
            raise UserError(f"{where}: expected a same-person line 'name i j' (fold {fold + 1}), got {len(fields)} "
                            "fields — fix that line or the header.")
        if not same and len(fields) != 4:
            raise UserError(f"{where}: expected a different-person line 'name1 i name2 j' (fold {fold + 1}), got "
                            f"{len(fields)} fields — fix that line or the header.")
        if same:
            i, j = _ints(fields[1:], where, "image numbers")
            pairs.append(Pair(image(fields[0], i, where), image(fields[0], j, where), True, fold))
        else:
            i, j = _ints([fields[1], fields[3]], where, "image numbers")
            pairs.append(Pair(image(fields[0], i, where), image(fields[2], j, where), False, fold))
    return pairs


# --------------------------------------------------------------------------- writing

def _name_and_number(path: Path) -> tuple[str, int]:
    match = re.fullmatch(rf"{re.escape(path.parent.name)}_(\d{{4}})", path.stem)
    if not match:
        raise UserError(f"cannot write {path} into a pairs file: it is not named <person>/<person>_<4 digits>.<ext> "
                        "— lay the images out as LFW does (facecls make-data synthetic layout=lfw does).")
    return path.parent.name, int(match.group(1))


def pairs_text(pairs: Sequence[Pair], folds: int, per_fold: int) -> str:
    """The file text for ``pairs`` (fold by fold: ``per_fold`` same pairs, then ``per_fold`` different)."""
    lines = [f"{folds}\t{per_fold}"]
    for fold in range(folds):
        for same in (True, False):
            chosen = [p for p in pairs if p.fold == fold and p.same == same]
            if len(chosen) != per_fold:
                kind = "same-person" if same else "different-person"
                raise ValueError(f"fold {fold} has {len(chosen)} {kind} pairs, the header says {per_fold}")
            for pair in chosen:
                (name_a, i), (name_b, j) = _name_and_number(Path(pair.path_a)), _name_and_number(Path(pair.path_b))
                if same and name_a != name_b:
                    raise ValueError(f"a same-person pair joins {name_a} and {name_b}")
                lines.append(f"{name_a}\t{i}\t{j}" if same else f"{name_a}\t{i}\t{name_b}\t{j}")
    if len(lines) - 1 != len(pairs):
        raise ValueError(f"{len(pairs) - len(lines) + 1} pairs have a fold outside 0..{folds - 1}")
    return "\n".join(lines) + "\n"


def write_pairs(path: str | Path, pairs: Sequence[Pair], folds: int, per_fold: int) -> Path:
    """Write ``pairs`` as an LFW View 2 file (header ``folds per_fold``), atomically."""
    return atomic_write_text(path, pairs_text(pairs, folds, per_fold))


# --------------------------------------------------------------------------- drawing

def _same_capacity(counts: Iterable[int]) -> int:
    return sum(n * (n - 1) // 2 for n in counts)


def _different_capacity(counts: Sequence[int]) -> int:
    return (sum(counts) ** 2 - sum(n * n for n in counts)) // 2


def _partition(names: list[str], sizes: dict[str, int], folds: int) -> list[list[str]] | None:
    """Identity-disjoint folds balanced by capacity: people with >= 2 images go largest first to
    the fold with the fewest same pairs so far, people with one image to the fold with the fewest
    images. ``names`` arrives shuffled, so equal sizes are spread at random. None when some fold
    would lack a same pair or a second person."""
    groups: list[list[str]] = [[] for _ in range(folds)]
    multi = sorted((n for n in names if sizes[n] >= 2), key=lambda n: -sizes[n])  # stable: keeps the shuffle
    for name in multi:
        min(groups, key=lambda g: _same_capacity(sizes[n] for n in g)).append(name)
    for name in (n for n in names if sizes[n] < 2):
        min(groups, key=lambda g: sum(sizes[n] for n in g)).append(name)
    if any(len(g) < 2 or _same_capacity(sizes[n] for n in g) == 0 for g in groups):
        return None
    return groups


def _fold_capacity(group: list[str], sizes: dict[str, int]) -> int:
    counts = [sizes[n] for n in group]
    return min(_same_capacity(counts), _different_capacity(counts))


def _sample(rng: np.random.Generator, count: int, capacity: int,
            draw: Callable[[], tuple], everything: Callable[[], list[tuple]]) -> list[tuple]:
    """``count`` distinct items: by rejection while they are sparse among ``capacity``, else (or if
    rejection stalls) by choosing among all of them; either way fixed by ``rng``."""
    if 2 * count <= capacity:
        seen: dict[tuple, None] = {}
        for _ in range(50 * count + 1000):
            seen.setdefault(draw(), None)
            if len(seen) == count:
                return list(seen)
    pool = everything()
    return [pool[i] for i in sorted(rng.choice(len(pool), size=count, replace=False))]


def _fold_pairs(rng: np.random.Generator, group: list[str], files: dict[str, list[str]], count: int,
                fold: int) -> list[Pair]:
    multi = [n for n in group if len(files[n]) >= 2]

    def draw_same() -> tuple:
        name = multi[int(rng.integers(len(multi)))]  # people uniformly, then images: no one dominates
        i, j = sorted(rng.choice(len(files[name]), size=2, replace=False).tolist())
        return (name, i, name, j)

    def all_same() -> list[tuple]:
        return [(n, i, n, j) for n in multi for i in range(len(files[n])) for j in range(i + 1, len(files[n]))]

    def draw_different() -> tuple:
        a, b = sorted(rng.choice(len(group), size=2, replace=False).tolist())
        return (group[a], int(rng.integers(len(files[group[a]]))), group[b], int(rng.integers(len(files[group[b]]))))

    def all_different() -> list[tuple]:
        return [(a, i, b, j) for x, a in enumerate(group) for b in group[x + 1:]
                for i in range(len(files[a])) for j in range(len(files[b]))]

    sizes = [len(files[n]) for n in group]
    same = _sample(rng, count, _same_capacity(sizes), draw_same, all_same)
    different = _sample(rng, count, _different_capacity(sizes), draw_different, all_different)
    return [Pair(Path(files[a][i]), Path(files[b][j]), kind, fold)
            for kind, chosen in ((True, same), (False, different)) for a, i, b, j in chosen]


def draw_pairs(files_by_identity: dict[str, list[str]], folds: int = 10, pairs_per_fold: int = 300,
               seed: int = 0) -> list[Pair]:
    """Draw balanced, identity-disjoint folds of same- and different-person pairs.

    Args:
        files_by_identity: person name → that person's image files (order does not matter).
        folds: how many folds (LFW: 10).
        pairs_per_fold: same-person pairs per fold, and as many different-person pairs (LFW's 300,
            the second number of the header; a fold holds twice this).
        seed: the same seed and files give the same pairs.

    Raises UserError, saying what is possible, when the people and images cannot fill the folds.
    """
    if folds < 1 or pairs_per_fold < 1:
        raise UserError(f"folds={folds}, pairs_per_fold={pairs_per_fold}: both must be at least 1 — fix the values.")
    files = {name: sorted(str(f) for f in paths) for name, paths in files_by_identity.items() if paths}
    sizes = {name: len(paths) for name, paths in files.items()}
    names = [str(n) for n in np.random.default_rng([seed, 0]).permutation(sorted(files))]
    groups = _partition(names, sizes, folds)
    capacity = min((_fold_capacity(g, sizes) for g in groups), default=0) if groups else 0
    if capacity < pairs_per_fold:
        raise UserError(_not_enough(names, sizes, folds, pairs_per_fold, capacity))
    rng = np.random.default_rng([seed, 1])
    return [pair for fold, group in enumerate(groups) for pair in _fold_pairs(rng, group, files, pairs_per_fold, fold)]


def _not_enough(names: list[str], sizes: dict[str, int], folds: int, per_fold: int, capacity: int) -> str:
    """The one-line error: what was asked, what the data hold, and the largest settings that fit."""
    multi = sum(1 for n in names if sizes[n] >= 2)
    possible_folds = 0
    for k in range(min(folds, multi), 0, -1):
        groups = _partition(names, sizes, k)
        if groups and min(_fold_capacity(g, sizes) for g in groups) >= per_fold:
            possible_folds = k
            break
    options = [f"{possible_folds} fold(s) of {per_fold}"] if possible_folds else []
    if capacity:
        options.append(f"{folds} folds of {capacity}")
    fits = " or ".join(options) if options else "no folds at all (need 2+ people, one with 2+ images)"
    return (f"cannot draw {folds} identity-disjoint folds of {per_fold} same + {per_fold} different pairs from "
            f"{len(names)} people ({multi} with 2+ images, {sum(sizes.values())} images): they allow {fits} — "
            f"lower verify.folds or verify.pairs_per_fold, or add people/images.")


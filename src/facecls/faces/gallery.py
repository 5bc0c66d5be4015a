"""A gallery of enrolled people: enrol from one folder per person, identify new photos against it.

What the gallery file holds (biometric data, so nothing more): per enrolled photo its path
relative to the gallery folder, size, modification time and embedding; per person the mean of
their normalised embeddings (normalised again), the photo count and the file names; the
fingerprint of the model that embedded them; the decision thresholds. Never pixels. It is
written atomically with owner-only permissions (0600), and enrolment decodes without the disk
cache, so no decoded pixels of the gallery are left behind either.

Re-enrolling embeds only photos that are new or changed (path, size and mtime differ from the
stored entry); a photo whose file is gone leaves the gallery with it, so deleting a person's
folder and enrolling again removes every trace of them from the file.

Thresholds for a false-accept rate come from one of two places, recorded with the gallery:
``verify.json`` of the same model (pairs of people the model never saw; preferred when it
measured that FAR) or, otherwise, the impostor similarities among the enrolled people (each
enrolled photo against every *other* person's mean embedding).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from facecls.data.sources import SYSTEM_FILES
from facecls.errors import UserError
from facecls.faces.embedder import Embedder
from facecls.faces.verification import far_key, pairs_needed
from facecls.io import atomic_write, safe_torch_load, tensor_bytes

log = logging.getLogger(__name__)

FORMAT = "facecls-gallery/1"
UNKNOWN = "unknown"
PRIVATE = 0o600


# --------------------------------------------------------------------------- the file

def write_gallery(path: Path, gallery: dict) -> Path:
    """Write atomically; the temp file is made owner-only before a byte is written into it."""
    def write(f) -> None:
        os.fchmod(f.fileno(), PRIVATE)
        torch.save(gallery, f)

    written = atomic_write(path, write, need_bytes=tensor_bytes(gallery))
    os.chmod(written, PRIVATE)
    return written


def read_gallery(path: str | Path) -> dict:
    """A gallery file written by :func:`write_gallery` (plain data only; never runs code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"gallery file '{path}' does not exist — make it with facecls enroll ckpt=… gallery=DIR "
                        f"out={path}.")
    data = safe_torch_load(path, what="gallery file", allowed="plain data",
                           fix="pass a file written by facecls enroll.")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"'{path}' is not a facecls gallery — pass a file written by facecls enroll.")
    return data


def check_gallery_model(gallery: dict, gallery_path: Path, fingerprint: str | None, model: str) -> None:
    """Refuse, in one line, to compare with a gallery another model embedded (``fingerprint``: the
    weights fingerprint of ``model``, the checkpoint or exported file about to embed the photos)."""
    if fingerprint != gallery["model"]["fingerprint"]:
        raise UserError(f"the gallery {gallery_path} was enrolled by another model (fingerprint "
                        f"{gallery['model']['fingerprint']}, {gallery['model']['ckpt']}) than {model} "
                        f"({fingerprint}) — identify with that checkpoint (ckpt=…) or enrol again with this one.")


# --------------------------------------------------------------------------- enrolment

def scan_gallery(folder: Path) -> dict[str, tuple[str, int, int]]:
    """{path relative to ``folder``: (person, size, mtime_ns)} for every visible file in a
    person's sub-folder (any depth below it). Loose files at the top are ignored, with a warning."""
    if not folder.is_dir():
        raise UserError(f"gallery={folder} is not a folder — give a folder with one sub-folder of photos per person.")
    found: dict[str, tuple[str, int, int]] = {}
    loose = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name.lower() in SYSTEM_FILES:
            continue
        if not entry.is_dir():
            loose.append(entry.name)
            continue
        for dirpath, dirnames, filenames in os.walk(entry.path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or name.lower() in SYSTEM_FILES:
                    continue
                full = Path(dirpath) / name
                st = full.stat()
                found[full.relative_to(folder).as_posix()] = (entry.name, st.st_size, st.st_mtime_ns)
    if loose:
        log.warning("Ignored %d file(s) directly in %s (%s): put each person's photos in a folder named after them.",
                    len(loose), folder, ", ".join(loose[:5]))
    if not found:
        raise UserError(f"gallery={folder} holds no person folders with photos — make one sub-folder per person "
                        "(gallery/<name>/<photo>.jpg).")
    return found


def person_means(files: dict[str, dict]) -> dict[str, dict]:
    """Per person: the mean of their photos' normalised embeddings, normalised; count; files."""
    grouped: dict[str, list[str]] = {}
    for rel, entry in files.items():
        grouped.setdefault(entry["person"], []).append(rel)
    return {person: {"embedding": F.normalize(torch.stack([files[r]["embedding"] for r in rels]).mean(0), dim=0),
                     "count": len(rels), "files": sorted(rels)}
            for person, rels in sorted(grouped.items())}


def impostor_scores(files: dict[str, dict], people: dict[str, dict]) -> torch.Tensor:
    """Each enrolled photo's similarity to every other person's mean embedding."""
    if len(people) < 2:
        return torch.empty(0)
    names = list(people)
    means = torch.stack([people[n]["embedding"] for n in names])
    rels = list(files)
    sims = torch.stack([files[r]["embedding"] for r in rels]) @ means.T
    own = torch.tensor([names.index(files[r]["person"]) for r in rels])
    mask = torch.ones_like(sims, dtype=torch.bool)
    mask[torch.arange(len(rels)), own] = False
    return sims[mask]


def thresholds_from_impostors(scores: torch.Tensor, fars: list[float]) -> dict[str, float]:
    """The lowest threshold with at most ``far`` of the impostor scores above it, per FAR the
    number of scores can measure (at least ceil(1/FAR) of them)."""
    ordered = torch.sort(scores.float(), descending=True).values.tolist()
    found = {}
    for far in fars:
        if len(ordered) >= pairs_needed(far):
            k = math.floor(far * len(ordered) + 1e-9)
            found[far_key(far)] = float(ordered[k]) if k < len(ordered) else float(ordered[-1]) - 1.0
    return found


def thresholds_from_verify(verify: dict | None, fingerprint: str, flip: bool = False) -> dict[str, float]:
    """``tar_at_far`` thresholds of a verify.json written for the same model with the same
    ``flip`` setting (mirror-fused scores sit higher); {} otherwise."""
    if not verify:
        return {}
    if verify.get("model_fingerprint") != fingerprint:
        log.warning("verify.json was written for another model (fingerprint %s, this one %s): its thresholds are "
                    "not used.", verify.get("model_fingerprint"), fingerprint)
        return {}
    if bool((verify.get("flip") or {}).get("used")) != flip:
        log.warning("verify.json was written with verify.flip=%s, the gallery uses flip=%s: its thresholds are not "
                    "used — run facecls verify with the same flip setting.", not flip, flip)
        return {}
    return {key: float(entry["threshold"]) for key, entry in (verify.get("tar_at_far") or {}).items()}


def enroll(embedder: Embedder, folder: Path, previous: dict | None, fars: list[float], verify: dict | None,
           flip: bool = False) -> tuple[dict, dict]:
    """Embed the new or changed photos under ``folder``, reuse the rest from ``previous``.
    Returns (the gallery, a summary: people, photos, embedded, reused, skipped)."""
    found = scan_gallery(folder)
    stored = {}
    if previous is not None:
        same_model = previous["model"]["fingerprint"] == embedder.fingerprint and bool(previous.get("flip")) == flip
        if same_model:
            stored = previous["files"]
        else:
            log.info("The gallery was enrolled with another model or flip setting: every photo is embedded again.")
    files: dict[str, dict] = {}
    todo = []
    for rel, (person, size, mtime) in found.items():
        old = stored.get(rel)
        if old is not None and old["size"] == size and old["mtime_ns"] == mtime and old["person"] == person:
            files[rel] = old
        else:
            todo.append(rel)
    embedded, _ = embedder.embed_files(folder, todo, flip=flip, cache_dir=None)  # no pixel cache of the gallery
    for rel, emb in zip(embedded.files, embedded.embeddings):
        person, size, mtime = found[rel]
        files[rel] = {"person": person, "size": size, "mtime_ns": mtime, "embedding": emb.clone()}
    if embedded.skipped:
        shown = "; ".join(f"{f} ({why})" for f, why in list(embedded.skipped.items())[:5])
        log.warning("Skipped %d unreadable photo(s): %s", len(embedded.skipped), shown)
    if not files:
        raise UserError(f"no readable photos under {folder} — put JPEG/PNG photos in one folder per person.")
    files = dict(sorted(files.items()))
    people = person_means(files)
    from_verify = thresholds_from_verify(verify, embedder.fingerprint, flip)
    impostors = impostor_scores(files, people)
    gallery = {
        "format": FORMAT,
        "model": {"fingerprint": embedder.fingerprint, "ckpt": str(embedder.source), "embedding": embedder.kind,
                  "dim": embedder.dim},
        "root": str(folder.resolve()), "flip": flip, "files": files, "people": people,
        "thresholds": {"verify": from_verify, "enrolled": thresholds_from_impostors(impostors, fars),
                       "impostor_comparisons": int(len(impostors))},
    }
    summary = {"people": len(people), "photos": len(files), "embedded": len(embedded.files),
               "reused": len(files) - len(embedded.files), "skipped": sorted(embedded.skipped)}
    return gallery, summary


# --------------------------------------------------------------------------- identification

def choose_threshold(gallery: dict, far: float | None, threshold: float | None) -> tuple[float, str]:
    """``threshold`` when given; else the gallery's threshold for ``far``: verify.json's when it
    measured that FAR, else the enrolled people's impostor estimate. One line when neither has it."""
    if threshold is not None:
        return float(threshold), "threshold= given"
    if far is None:
        raise UserError("give far=… (e.g. far=1e-3) or threshold=… — the decision needs one.")
    if not 0 < float(far) <= 1:
        raise UserError(f"far={far} is not a rate — give a false-accept rate in (0, 1], e.g. far=1e-3.")
    key = far_key(float(far))
    t = gallery["thresholds"]
    if key in t["verify"]:
        return t["verify"][key], f"FAR {key} from verify.json (pairs of people the model never saw)"
    if key in t["enrolled"]:
        return t["enrolled"][key], (f"FAR {key} estimated from {t['impostor_comparisons']} impostor comparisons "
                                    "among the enrolled people")
    have = sorted(set(t["verify"]) | set(t["enrolled"]))
    raise UserError(f"far={far:g}: the gallery has no threshold for it (it has FAR {', '.join(have) or 'none'}; "
                    f"{t['impostor_comparisons']} impostor comparisons among enrolled people, "
                    f"{pairs_needed(float(far))} needed) — choose a larger far, give threshold=…, run facecls verify "
                    "on the model and enrol again, or enrol more people.")


def identify_rows(embeddings: torch.Tensor, gallery: dict, threshold: float) -> list[dict]:
    """Per probe: best person, its similarity, runner-up and its similarity, and the decision
    (the best person when its similarity is above ``threshold``, else ``unknown``)."""
    names = list(gallery["people"])
    means = torch.stack([gallery["people"][n]["embedding"] for n in names])
    sims = embeddings @ means.T
    k = min(2, len(names))
    values, indices = sims.topk(k, dim=1)
    rows = []
    for v, i in zip(values.tolist(), indices.tolist()):
        best, score = names[i[0]], v[0]
        rows.append({"person": best, "similarity": score,
                     "runner_up": names[i[1]] if k > 1 else "", "runner_up_similarity": v[1] if k > 1 else None,
                     "decision": best if score > threshold else UNKNOWN})
    return rows


def open_set_rates(files: list[str], rows: list[dict], enrolled: set[str]) -> dict | None:
    """When every probe sits in a folder named after its person: the share of enrolled people
    recognised (decided as themselves), of enrolled people wrongly named someone else, and of
    people not enrolled answered ``unknown``. None when the folders do not say who is who."""
    truth = [Path(f).parts[0] if len(Path(f).parts) > 1 else None for f in files]
    if not files or any(t is None for t in truth):
        return None
    known = [(t, r["decision"]) for t, r in zip(truth, rows) if t in enrolled]
    strangers = [r["decision"] for t, r in zip(truth, rows) if t not in enrolled]
    return {
        "enrolled_probes": len(known),
        "enrolled_recognised": sum(t == d for t, d in known) / len(known) if known else None,
        "enrolled_misidentified": sum(d not in (t, UNKNOWN) for t, d in known) / len(known) if known else None,
        "not_enrolled_probes": len(strangers),
        "not_enrolled_unknown": sum(d == UNKNOWN for d in strangers) / len(strangers) if strangers else None,
    }

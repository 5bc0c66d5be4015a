"""`facecls enroll` / `facecls identify`: enrolled people are recognised and people not enrolled
answer unknown; re-enrolling embeds only what changed; the gallery file is owner-only and holds
embeddings and file names, never pixels; a gallery of another model and impossible FARs are refused."""
from __future__ import annotations

import os
import shutil
import stat

import pytest
import torch

from facecls.cli import main as facecls
from facecls.config.compose import compose
from facecls.errors import UserError
from facecls.faces.recognise import run_enroll, run_identify

from helpers import read_csv, read_json, train_tiny_checkpoint, write_face_tree

ENROLLED = {"ann": 2, "ben": 1, "cem": 2}
STRANGERS = {"dia": 1, "eli": 1}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_faces):
    return train_tiny_checkpoint(tmp_path_factory.mktemp("gallery"), tiny_faces)


def enroll(ckpt, gallery, out, *more):
    return run_enroll(compose("enroll", [f"ckpt={ckpt}", f"gallery={gallery}", f"out={out}", "trainer.device=cpu",
                                         *more]))


def test_enrolled_people_recognised_strangers_unknown(ckpt, tmp_path, monkeypatch, capsys):
    people = write_face_tree(tmp_path / "people", {**ENROLLED, **STRANGERS})
    gallery = tmp_path / "gallery"
    for name in ENROLLED:  # each enrolled person's first photo; the probes are all photos of everyone
        (gallery / name).mkdir(parents=True)
        shutil.copy(people / name / f"{name}_0001.png", gallery / name)
    monkeypatch.setenv("FACECLS_CACHE_DIR", str(tmp_path / "cache"))
    facecls(["enroll", f"ckpt={ckpt}", f"gallery={gallery}", f"out={tmp_path / 'g.pt'}"])
    # a strict threshold: only a photo of an enrolled person (similarity 1 to their mean) passes
    facecls(["identify", f"gallery={tmp_path / 'g.pt'}", f"input={people}", "threshold=0.9999",
             f"out={tmp_path / 'id'}"])
    rows = {r["file"]: r for r in read_csv(tmp_path / "id" / "identify.csv")}
    assert list(next(iter(rows.values()))) == ["file", "person", "similarity", "runner_up", "runner_up_similarity",
                                               "decision"]
    assert len(rows) == sum(ENROLLED.values()) + sum(STRANGERS.values())
    for file, row in rows.items():
        person = file.split("/")[0]
        assert row["decision"] == (person if person in ENROLLED else "unknown"), row
        assert row["runner_up"] and row["runner_up"] != row["person"]
    rates = read_json(tmp_path / "id" / "identify.json")["rates"]
    assert rates["enrolled_recognised"] == 1.0 and rates["not_enrolled_unknown"] == 1.0
    assert (tmp_path / "id" / "contact_sheet.png").stat().st_size > 0


def test_reenrolling_embeds_only_what_changed(ckpt, tmp_path):
    gallery = write_face_tree(tmp_path / "gallery", ENROLLED)
    out = tmp_path / "g.pt"
    assert enroll(ckpt, gallery, out)["embedded"] == 5
    assert enroll(ckpt, gallery, out)["embedded"] == 0
    write_face_tree(gallery, {"dia": 2}, seed=1)                         # a new person: 2 photos
    changed = gallery / "ann" / "ann_0001.png"
    shutil.copy(gallery / "ben" / "ben_0001.png", changed)              # a changed photo (size/mtime)
    os.utime(changed, ns=(1, 1))
    summary = enroll(ckpt, gallery, out)
    assert (summary["embedded"], summary["reused"], summary["people"]) == (3, 4, 4)
    shutil.rmtree(gallery / "cem")                                     # deleting a person = delete the folder
    summary = enroll(ckpt, gallery, out)
    data = torch.load(out, weights_only=True)
    assert summary["embedded"] == 0 and "cem" not in data["people"]
    assert not any(entry["person"] == "cem" for entry in data["files"].values())


def test_gallery_file_is_private_and_holds_no_pixels(ckpt, tmp_path):
    gallery = write_face_tree(tmp_path / "gallery", ENROLLED)
    out = tmp_path / "g.pt"
    enroll(ckpt, gallery, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    data = torch.load(out, weights_only=True)
    dim = data["model"]["dim"]
    tensors = []

    def walk(node):
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)
        elif torch.is_tensor(node):
            tensors.append(node)

    walk(data)
    assert len(tensors) == 5 + 3  # one embedding per photo and per person, nothing else
    assert all(t.shape == (dim,) and t.dtype == torch.float32 for t in tensors)
    assert data["people"]["ann"]["files"] == ["ann/ann_0001.png", "ann/ann_0002.png"]
    assert data["people"]["ann"]["count"] == 2


def test_gallery_of_another_model_is_refused(ckpt, tmp_path):
    from facecls.inference.checkpoint import load_checkpoint, save_checkpoint

    gallery = write_face_tree(tmp_path / "gallery", ENROLLED)
    enroll(ckpt, gallery, tmp_path / "g.pt")
    other = load_checkpoint(ckpt)
    first = next(k for k, v in other.model.items() if v.is_floating_point())
    other.model[first] = other.model[first] + 0.01
    save_checkpoint(tmp_path / "other.pt", other)
    cfg = compose("identify", [f"gallery={tmp_path / 'g.pt'}", f"input={gallery}", f"ckpt={tmp_path / 'other.pt'}",
                               "threshold=0.5", f"out={tmp_path / 'id'}", "trainer.device=cpu"])
    with pytest.raises(UserError) as err:
        run_identify(cfg)
    assert "enrolled by another model" in str(err.value) and "\n" not in str(err.value)


def test_a_far_the_gallery_cannot_measure_is_one_line(ckpt, tmp_path):
    gallery = write_face_tree(tmp_path / "gallery", ENROLLED)
    enroll(ckpt, gallery, tmp_path / "g.pt")
    cfg = compose("identify", [f"gallery={tmp_path / 'g.pt'}", f"input={gallery}", "far=0.001",
                               f"out={tmp_path / 'id'}", "trainer.device=cpu"])
    with pytest.raises(UserError) as err:  # 5 photos x 2 other people = 10 impostor comparisons: FAR 1e-1 only
        run_identify(cfg)
    assert "far=0.001" in str(err.value) and "1e-01" in str(err.value) and "\n" not in str(err.value)
    cfg.far = 0.1
    assert run_identify(cfg)["threshold_rule"].startswith("FAR 1e-01 estimated from 10 impostor comparisons")

"""Open-set training (issue 23): margin losses end to end, exact resume with a loss head,
identity-disjoint splits, val_verif_acc, test verification numbers, and the one-line refusals."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from facecls.config.compose import compose
from facecls.data.dataset import build_data
from facecls.data.preprocess import Preprocess
from facecls.data.split import assign_identity_splits
from facecls.data.synthetic import write_dataset
from facecls.errors import UserError
from facecls.inference.checkpoint import load_checkpoint
from facecls.training.run import build_run, run_training

from helpers import TINY, read_history, read_json

# 24 people × 4 images: a 0.5/0.25/0.25 identity split leaves ≥ 4 people in val and test (seed 0)
IDENTITY = ["data.split.by=identity", "data.split.train=0.5", "data.split.val=0.25", "data.split.test=0.25"]
ARCFACE = ["loss=arcface", "model.embedding_dim=16", "model.channels=[4]", "model.fc=[16]"]


@pytest.fixture(scope="module")
def people(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("people") / "faces"
    write_dataset(root, num_classes=24, images_per_class=4, image_size=32, seed=0, progress=False)
    return root


def _cfg(root: Path, cache: Path, *overrides: str):
    return compose("train", ["data=imagefolder", f"data.root={root}", *TINY, f"paths.cache_dir={cache}",
                             "trainer.checkpoint.every_n_epochs=1", *overrides])


def test_margin_loss_trains_end_to_end_on_an_identity_split(people, tmp_path):
    run_dir = tmp_path / "run"
    metrics = run_training(_cfg(people, tmp_path / "cache", *ARCFACE, *IDENTITY), run_dir)
    history = read_history(run_dir)
    assert list(history[0]) == ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_verif_acc",
                                "seconds"]
    assert all(math.isnan(float(r["val_acc"])) for r in history)  # val people are no training class
    assert all(0.0 <= float(r["val_verif_acc"]) <= 1.0 for r in history)
    best = max(range(len(history)), key=lambda i: (float(history[i]["val_verif_acc"]), -i))
    assert metrics["best_epoch"] == best + 1  # the monitor defaulted to val_verif_acc
    assert metrics["test_acc"] is None and metrics["best_val_acc"] is None
    assert 0.0 <= metrics["test_verif_acc"] <= 1.0 and metrics["test_verif_folds"] >= 2
    assert metrics["test_verif_acc_stderr"] == pytest.approx(metrics["test_verif_acc_std"]
                                                             / math.sqrt(metrics["test_verif_folds"]))
    assert "test_roc_auc" in metrics and "test_tar_at_far" in metrics
    saved = read_json(run_dir / "metrics.json")
    assert saved["num_classes"] == len(saved["classes"]) < 24  # the training classes are the train people only
    best_pt = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best_pt.loss_head["weight"].shape == (saved["num_classes"], 16)  # one centre per train person
    assert not any(k.startswith("head.") for k in best_pt.model)  # the head is no part of the model


def test_a_margin_loss_resumes_exactly(people, tmp_path):
    overrides = [*ARCFACE, "loss=cosface", "trainer.deterministic=true", "seed=3"]
    straight = build_run(_cfg(people, tmp_path / "cache", *overrides, "trainer.max_epochs=4"), tmp_path / "a")
    straight.fit(tmp_path / "a")
    straight.checkpoints.close()
    first = build_run(_cfg(people, tmp_path / "cache", *overrides, "trainer.max_epochs=2"), tmp_path / "b")
    first.fit(tmp_path / "b")
    first.checkpoints.close()
    again = build_run(_cfg(people, tmp_path / "cache", *overrides, "trainer.max_epochs=4", "resume=true"),
                      tmp_path / "b")
    assert again.resume is not None and again.resume.epoch == 2
    again.fit(tmp_path / "b")
    again.checkpoints.close()
    a = [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(tmp_path / "a")]
    b = [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(tmp_path / "b")]
    assert a == b and len(a) == 4 and "val_verif_acc" in a[0]
    heads = [load_checkpoint(d / "checkpoints" / "last.pt").loss_head for d in (tmp_path / "a", tmp_path / "b")]
    assert torch.equal(heads[0]["weight"], heads[1]["weight"])


def test_classifier_history_keeps_its_columns(tiny_faces, tmp_path):
    run_dir = tmp_path / "run"
    metrics = run_training(_cfg(tiny_faces, tmp_path / "cache", "trainer.max_epochs=1", "model.channels=[4]"),
                           run_dir)
    assert list(read_history(run_dir)[0]) == ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc",
                                              "seconds"]
    assert metrics["test_acc"] is not None and "test_verif_acc" not in metrics
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt").loss_head is None


def test_identity_split_puts_each_person_in_one_split_and_adding_people_moves_none():
    classes = [f"person_{i:03d}" for i in range(60)]
    files = [f"{c}/{j}.jpg" for c in classes for j in range(3)]
    labels = [i for i in range(60) for _ in range(3)]
    splits = assign_identity_splits(files, labels, classes, 0.6, 0.2, 0.2, seed=0)
    where = {}
    for f, s in zip(files, splits):
        where.setdefault(f.split("/")[0], set()).add(s)
    assert all(len(s) == 1 for s in where.values())  # no person in two splits
    assert {s for v in where.values() for s in v} == {"train", "val", "test"}
    more = sorted(classes + [f"new_{i}" for i in range(20)])  # new people sort in between the old ones
    more_files = [f"{c}/{j}.jpg" for c in more for j in range(3)]
    more_labels = [i for i in range(len(more)) for _ in range(3)]
    grown = dict(zip(more_files, assign_identity_splits(more_files, more_labels, more, 0.6, 0.2, 0.2, seed=0)))
    assert all(grown[f] == s for f, s in zip(files, splits))  # nobody moved


def test_identity_split_of_a_folder(people, tmp_path):
    cfg = _cfg(people, tmp_path / "cache", *IDENTITY)
    data = build_data(cfg.data, Preprocess(size=16), None, progress=False)
    person = {n: {f.split("/")[0] for f in data.split(n).files} for n in ("train", "val", "test")}
    assert not (person["train"] & person["val"] or person["train"] & person["test"] or person["val"] & person["test"])
    assert sorted(person["train"]) == data.classes  # the training classes are the train people
    assert int(data.train.labels.max()) == len(data.classes) - 1
    assert int(data.val.labels.min()) >= len(data.classes)  # val people are numbered after them


@pytest.mark.parametrize("overrides, message", [
    (["loss=arcface"], "set model.embedding_dim"),
    ([*ARCFACE, "aug.mixup_alpha=0.2"], "MixUp/CutMix"),
    (["trainer.monitor=val_verif_acc"], "needs an open-set run"),
    (["data.split.by=person"], "data.split.by=person"),
    ([*IDENTITY, "data.split.folds=3"], "data.split.folds"),
    (["model.embedding_dim=-1"], "model.embedding_dim=-1"),
])
def test_bad_combinations_are_one_line(tiny_faces, tmp_path, overrides, message):
    with pytest.raises(UserError, match=message) as err:
        build_run(_cfg(tiny_faces, tmp_path / "cache", *overrides), tmp_path / "run")
    assert "\n" not in str(err.value)


def test_a_frozen_backbone_neck_trains_on_cached_features(tiny_faces, tmp_path, no_downloads):
    """feature_extractor with model.embedding_dim (and loss=cross_entropy: a linear loss head on the
    embedding): the neck trains on the cached features."""
    cfg = _cfg(tiny_faces, tmp_path / "cache", "model=feature_extractor", "model.name=resnet18",
               "model.pretrained=false", "model.input_size=32", "model.embedding_dim=8", "trainer.max_epochs=1")
    run = build_run(cfg, tmp_path / "run")
    assert run.data.train.inputs.dtype == torch.float32  # cached features, not images
    result = run.fit(tmp_path / "run")
    run.checkpoints.close()
    assert list(result.history[0]) == ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]
    x = run.prepare(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert run.model.eval()(x).shape == (2, 8)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt").loss_head["linear.weight"].shape == (3, 8)
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)

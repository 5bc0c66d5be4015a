"""`facecls suspects`: confident learning's rule on hand-made probabilities, then a real 3-fold
sweep with a planted wrong label: every image is scored out of fold exactly once."""
from __future__ import annotations

import shutil

import pytest
import torch

from facecls.sweeps.suspects import class_thresholds, find_suspects

from helpers import TINY, read_csv, read_json, run_cli


def test_confident_learning_rule():
    # class thresholds: a = mean(.9, .8, .2) = .633, b = mean(.7, .9) = .8
    probs = torch.tensor([[.9, .1], [.8, .2], [.2, .8], [.3, .7], [.1, .9]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    assert torch.allclose(class_thresholds(probs, labels), torch.tensor([1.9 / 3, .8]))
    # image 2 (labelled a, p_a .2 < .633, p_b .8 >= .8) is the one suspect; image 3 (labelled b,
    # p_b .7 < .8) is unsure but no other class passes its threshold (p_a .3 < .633): not a suspect
    assert find_suspects(probs, labels) == [(2, 1)]
    # ranked by the given label's probability, lowest first
    probs = torch.tensor([[.9, .1], [.9, .1], [.25, .75], [.1, .9], [.1, .9], [.1, .9], [.8, .2]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    assert find_suspects(probs, labels) == [(6, 0), (2, 1)]


@pytest.mark.slow  # a 3-fold sweep (~60 s on two busy cores)
def test_suspects_of_a_kfold_sweep(tmp_path, tiny_faces, cache_env):
    data = tmp_path / "faces"
    shutil.copytree(tiny_faces, data)
    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    planted = sorted((data / classes[0]).iterdir())[0]
    shutil.move(planted, data / classes[1] / f"planted{planted.suffix}")  # a class-0 face labelled class 1
    sweep = tmp_path / "sweep"
    run_cli("train", "-m", "data=imagefolder", f"data.root={data}", *TINY, "trainer.max_epochs=6",
            "data.split.folds=3", "data.split.fold=0,1,2", f"hydra.sweep.dir={sweep}", cwd=tmp_path, env=cache_env)
    proc = run_cli("suspects", str(sweep), cwd=tmp_path, env=cache_env)
    summary = read_json(sweep / "suspects" / "suspects.json")
    files = sorted(str(p.relative_to(data)) for p in data.rglob("*.jpg"))
    assert summary["images"] == len(files) == 36  # every image once (train+val by its fold, test by all)
    rows = read_csv(sweep / "suspects" / "suspects.csv")
    assert len(rows) == summary["suspects"] and (sweep / "suspects" / "suspects.png").is_file()
    assert [float(r["p_given"]) for r in rows] == sorted(float(r["p_given"]) for r in rows)
    assert all(float(r["p_given"]) < float(r["threshold_given"]) for r in rows)
    assert "look mislabelled" in proc.stdout and (proc.stdout + proc.stderr).count("look mislabelled") == 1

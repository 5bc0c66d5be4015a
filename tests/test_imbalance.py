"""Class imbalance: trainer.class_weights, data.sampler=balanced and the imbalance warning."""
from __future__ import annotations

import logging

import pytest
import torch

from facecls.data.batches import iterate_batches
from facecls.data.dataset import Split, _warn_small_classes
from facecls.errors import UserError
from facecls.training.imbalance import check_sampler, class_weights

from helpers import finish_cli, read_json, start_cli


def test_balanced_weights_are_inverse_frequency_and_lists_are_checked():
    labels = torch.tensor([0, 0, 0, 1])
    assert class_weights("balanced", labels, ["a", "b"]) == pytest.approx([4 / 6, 2.0])
    assert class_weights(None, labels, ["a", "b"]) is None
    assert class_weights([1, 3.5], labels, ["a", "b"]) == [1.0, 3.5]
    with pytest.raises(UserError, match="has 3 values for 2 classes"):
        class_weights([1, 2, 3], labels, ["a", "b"])
    with pytest.raises(UserError, match="needs training images of every class; none of: c"):
        class_weights("balanced", labels, ["a", "b", "c"])
    with pytest.raises(UserError, match="data.sampler=often"):
        check_sampler("often")


def test_balanced_sampler_draws_every_class_equally_often():
    labels = torch.tensor([0] * 90 + [1] * 10)
    split = Split(torch.zeros(100, 1), labels)
    generator = torch.Generator().manual_seed(0)
    drawn = torch.cat([y for _ in range(20) for _, y in iterate_batches(split, 32, shuffle=True, generator=generator,
                                                                     balanced=True)])
    assert len(drawn) == 2000 and abs(drawn.float().mean().item() - 0.5) < 0.05  # ≈ half from the 10-image class
    plain = torch.cat([y for _, y in iterate_batches(split, 32, shuffle=True, generator=generator)])
    assert sorted(plain.tolist()) == sorted(labels.tolist())  # without it: every image exactly once


def test_imbalance_warning_names_the_classes(caplog):
    with caplog.at_level(logging.WARNING, logger="facecls.data.dataset"):
        _warn_small_classes(["big", "small"], torch.tensor([0] * 12 + [1] * 2))
    assert "big has 12 images, small only 2" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="facecls.data.dataset"):
        _warn_small_classes(["a", "b"], torch.tensor([0] * 10 + [1] * 3))
    assert "Imbalanced" not in caplog.text


def test_weights_and_sampler_reach_the_run_and_metrics_json(tmp_path, tiny_faces, cache_env):
    from helpers import TINY

    # the run and the mistake side by side
    jobs = [start_cli("train", "data=imagefolder", f"data.root={tiny_faces}", *TINY, "trainer.class_weights=[1,2,3]",
                      "data.sampler=balanced", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=cache_env),
            start_cli("train", "data=imagefolder", f"data.root={tiny_faces}", *TINY, "trainer.class_weights=[1,2]",
                      f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path, env=cache_env)]
    proc = finish_cli(jobs[1], check=False)
    finish_cli(jobs[0])
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["class_weights"] == [1.0, 2.0, 3.0] and metrics["sampler"] == "balanced"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "has 2 values for 3 classes" in lines[0]

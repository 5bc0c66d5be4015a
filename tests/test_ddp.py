"""DDP (trainer.strategy=ddp under torchrun): sharding rules, the launch checks, and a
2-process gloo run on CPU that ends with the weights of a 1-process run with the same
global batch."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facecls.config.args import worker_rank_args
from facecls.data.batches import iterate_batches, shard_indices
from facecls.data.dataset import Split
from facecls.errors import UserError
from facecls.training.distributed import DistContext, setup

from helpers import read_json


def test_training_shares_make_up_the_single_process_batches():
    order = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    shares = [shard_indices(order, rank, 2, pad=True) for rank in range(2)]
    batch, per_rank = 8, 4
    for step in range(4):
        together = torch.cat([s[step * per_rank:(step + 1) * per_rank] for s in shares])
        assert sorted(together.tolist()) == sorted(order[step * batch:(step + 1) * batch].tolist())


def test_uneven_training_shares_are_padded_and_evaluation_shares_are_not():
    order = torch.arange(10)
    padded = [shard_indices(order, rank, 4, pad=True) for rank in range(4)]
    assert [len(s) for s in padded] == [3, 3, 3, 3]  # every rank runs the same number of steps
    assert set(torch.cat(padded).tolist()) == set(range(10))
    plain = [shard_indices(order, rank, 4, pad=False) for rank in range(4)]
    assert [len(s) for s in plain] == [3, 3, 2, 2]
    assert sorted(torch.cat(plain).tolist()) == list(range(10))  # each image counted once
    assert shard_indices(torch.arange(1), 1, 3, pad=True).tolist() == [0]  # fewer images than ranks


def test_iterate_batches_yields_this_ranks_share():
    split = Split(torch.arange(10).view(10, 1), torch.arange(10))
    seen = [torch.cat([y for _, y in iterate_batches(split, 2, rank=r, world_size=2)]) for r in range(2)]
    assert seen[0].tolist() == [0, 2, 4, 6, 8] and seen[1].tolist() == [1, 3, 5, 7, 9]
    single = torch.cat([y for _, y in iterate_batches(split, 4)])
    assert single.tolist() == list(range(10))


def test_launch_mistakes_are_one_line_errors(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(UserError, match="torchrun --nproc_per_node"):
        setup("ddp", torch.device("cpu"))
    with pytest.raises(UserError, match="unknown trainer.strategy 'dp'"):
        setup("dp", torch.device("cpu"))
    from facecls.training.loop_types import LoopSettings

    with pytest.raises(UserError, match="trainer.batch_size=9 does not split over 2 processes"):
        DistContext(rank=0, world_size=2).adapt(LoopSettings(device=torch.device("cpu"), max_epochs=1, batch_size=9))
    settings = DistContext(rank=1, world_size=2).adapt(
        LoopSettings(device=torch.device("cpu"), max_epochs=1, batch_size=8, progress=True))
    assert (settings.batch_size, settings.progress, settings.dist.rank) == (4, False, 1)


def test_other_ranks_write_no_run_dir():
    args = worker_rank_args(["seed=1", "hydra.output_subdir=.hydra"])
    assert args == ["seed=1", "hydra.output_subdir=null", "hydra/job_logging=stdout", "hydra.run.dir=."]
    # A run dir given explicitly (or by resume=) is the same in every process: keep it.
    assert "hydra.run.dir=." not in worker_rank_args(["hydra.run.dir=runs/x"])


@pytest.fixture(scope="module")
def even_faces(tmp_path_factory) -> Path:
    """4 classes in fixed splits: 16 train images (2 global batches of 8), 5 val (uneven
    shares over 2 processes), 8 test."""
    from facecls.data.synthetic import write_dataset

    base = tmp_path_factory.mktemp("ddp")
    source = write_dataset(base / "all", num_classes=4, images_per_class=8, image_size=32, seed=0, progress=False)
    for i, class_dir in enumerate(sorted(source.iterdir())):
        files = sorted(class_dir.iterdir())
        for split, chosen in (("train", files[:4]), ("val", files[4:6] if i == 0 else files[4:5]),
                              ("test", files[6:8])):
            (base / "faces" / split / class_dir.name).mkdir(parents=True)
            for f in chosen:
                shutil.copy(f, base / "faces" / split / class_dir.name / f.name)
    return base / "faces"


def test_two_process_gloo_ddp_equals_one_process(even_faces, tmp_path, cache_env):
    # SGD: its update is linear in the gradient, so float rounding stays at rounding size.
    # fp32 on both sides: trainer.amp=auto turns bf16 on for CPUs with native bf16 (AMX,
    # AVX512-BF16), and bf16 rounding of different batch shares is not rounding size.
    common = ["train", "data=imagefolder", f"data.root={even_faces}", "model.input_size=16", "optim=sgd",
              "trainer.max_epochs=2", "trainer.batch_size=8", "trainer.progress=false", "trainer.amp=false"]
    env = dict(cache_env, OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "facecls"]
    jobs = {
        "single": subprocess.Popen([sys.executable, "-m", "facecls", *common, "hydra.run.dir=single"],
                                   cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        "ddp": subprocess.Popen([*torchrun, *common, "trainer.strategy=ddp", "hydra.run.dir=ddp"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
    }
    outputs = {}
    for name, job in jobs.items():
        outputs[name], _ = job.communicate(timeout=300)
        assert job.returncode == 0, f"{name}:\n{outputs[name][-3000:]}"
    assert "DDP: 2 processes, backend gloo" in outputs["ddp"]
    assert outputs["ddp"].count("epoch 2/2 train_loss") == 1  # rank 0 logs, rank 1 does not

    single = torch.load(tmp_path / "single" / "checkpoints" / "last.pt", weights_only=True)
    ddp = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)
    first = torch.load(tmp_path / "single" / "checkpoints" / "best.pt", weights_only=True)
    for key, weight in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], weight, atol=1e-6, rtol=1e-5)
    moved = max((single["model"][k] - first["model"][k]).abs().max().item() for k in single["model"])
    assert moved > 1e-4  # the epochs changed the weights: the comparison means something

    # Validation scores were all-reduced over uneven shares (3 + 2 images): same as one process.
    for a, b in zip(single["history"], ddp["history"]):
        assert a["val_acc"] == b["val_acc"] and a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    metrics = read_json(tmp_path / "ddp" / "metrics.json")
    assert metrics["test_acc"] == read_json(tmp_path / "single" / "metrics.json")["test_acc"]
    # Only rank 0 wrote: nothing beside the two run dirs and the cache.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "ddp", "single"]
    assert (tmp_path / "ddp" / ".hydra" / "overrides.yaml").is_file()

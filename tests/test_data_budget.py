"""Speed levers of the data pipeline: splits are views of one decoded tensor, data over
`data.cache_max_gb` stay on disk (memory-mapped), batch preparation, trainer.compile."""
from __future__ import annotations

import shutil

import pytest
import torch
from omegaconf import OmegaConf

from facecls.data.batches import BatchPreparer
from facecls.data.dataset import build_data
from facecls.data.mapped import budget_bytes, compact_rows_
from facecls.data.preprocess import Preprocess
from facecls.data.split import assign_splits
from facecls.errors import UserError
from facecls.training.runtime import compile_model

from helpers import TINY, only_run_dir, read_json, run_cli

PREP = Preprocess(size=16)
TINY_BUDGET = 1e-9  # GB: any dataset is over it


def data_cfg(root, **extra):
    cfg = {"source": {"_target_": "facecls.data.sources.image_folder", "root": str(root)},
           "split": {"train": 0.7, "val": 0.15, "test": 0.15, "seed": 0}, "cache": True, **extra}
    return OmegaConf.create(cfg)


def same_data(a, b) -> None:
    for name in ("train", "val", "test"):
        x, y = a.split(name), b.split(name)
        assert x.files == y.files and torch.equal(x.labels, y.labels) and torch.equal(x.inputs, y.inputs)


def test_splits_are_views_in_file_order(tiny_faces, tmp_path):
    data = build_data(data_cfg(tiny_faces), PREP, tmp_path / "cache", progress=False)
    files = sorted(p.relative_to(tiny_faces).as_posix() for p in tiny_faces.rglob("*.jpg"))
    which = assign_splits(files, 0.7, 0.15, 0.15, seed=0)
    storage = {data.split(name).inputs.untyped_storage().data_ptr() for name in ("train", "val", "test")}
    assert len(storage) == 1  # one decoded tensor, no per-split copy
    for name in ("train", "val", "test"):
        assert data.split(name).files == [f for f, w in zip(files, which) if w == name]
        assert data.split(name).inputs.shape[1:] == (3, 16, 16) and data.split(name).inputs.is_contiguous()


def test_over_budget_pixels_are_memory_mapped(tiny_faces, tmp_path):
    in_memory = build_data(data_cfg(tiny_faces), PREP, tmp_path / "mem", progress=False)
    mapped = build_data(data_cfg(tiny_faces, cache_max_gb=TINY_BUDGET), PREP, tmp_path / "disk", progress=False)
    same_data(in_memory, mapped)
    raw = list((tmp_path / "disk" / "tensors").glob("*.u8"))
    assert len(raw) == 1 and raw[0].stat().st_size == 36 * 3 * 16 * 16  # 3 classes × 12 images
    assert not list((tmp_path / "disk" / "tensors").glob("*.pt"))  # never held whole in memory
    again = build_data(data_cfg(tiny_faces, cache_max_gb=TINY_BUDGET), PREP, tmp_path / "disk", progress=False)
    same_data(in_memory, again)
    # a cache written in memory earlier is memory-mapped too once the data are over the budget
    same_data(in_memory, build_data(data_cfg(tiny_faces, cache_max_gb=TINY_BUDGET), PREP, tmp_path / "mem",
                                    progress=False))


def test_unreadable_file_is_dropped_from_the_mapped_file(tiny_faces, tmp_path):
    root = tmp_path / "faces"
    shutil.copytree(tiny_faces, root)
    broken = sorted(root.rglob("*.jpg"))[5]  # a train, val or test image: rows after it move up
    broken.write_bytes(b"not a jpeg")
    in_memory = build_data(data_cfg(root), PREP, tmp_path / "mem", progress=False)
    mapped = build_data(data_cfg(root, cache_max_gb=TINY_BUDGET), PREP, tmp_path / "disk", progress=False)
    assert list(mapped.skipped) == [broken.relative_to(root).as_posix()]
    same_data(in_memory, mapped)
    assert next((tmp_path / "disk" / "tensors").glob("*.u8")).stat().st_size == 35 * 3 * 16 * 16


def test_over_budget_without_a_disk_cache_is_a_user_error(tiny_faces):
    with pytest.raises(UserError, match="data.cache_max_gb.*data.cache=true"):
        build_data(data_cfg(tiny_faces, cache=False, cache_max_gb=TINY_BUDGET), PREP, None, progress=False)


def test_budget_values():
    assert budget_bytes(None) is None
    assert budget_bytes(2) == 2 * 2**30 and budget_bytes("0.5") == 2**29
    assert budget_bytes("auto") > 2**20  # half of this machine's RAM
    for bad in (0, -1, "lots", True):
        with pytest.raises(UserError, match="data.cache_max_gb"):
            budget_bytes(bad)


def test_compact_rows_moves_kept_rows_up_in_order():
    rows = torch.arange(6).view(6, 1).repeat(1, 3)
    kept = compact_rows_(rows, torch.tensor([False, True, True, False, True, False]))
    assert kept == 3 and rows[:3, 0].tolist() == [1, 2, 4]


def test_train_with_data_over_the_budget(compose_train, tmp_path):
    from facecls.training.run import run_training

    # in-process (test_bad_budget_is_one_line below takes data.cache_max_gb through the CLI)
    run_training(compose_train(f"data.cache_max_gb={TINY_BUDGET}"), tmp_path / "run")
    metrics = read_json(only_run_dir(tmp_path) / "metrics.json")
    assert metrics["epochs_run"] == 2 and 0.0 <= metrics["test_acc"] <= 1.0
    assert list((tmp_path / "cache" / "tensors").glob("*.u8"))


def test_bad_budget_is_one_line(tiny_faces, tmp_path, cache_env):
    proc = run_cli("train", "data=imagefolder", f"data.root={tiny_faces}", "data.cache_max_gb=lots", *TINY,
                   "hydra.run.dir=" + str(tmp_path / "run"), cwd=tmp_path, env=cache_env, check=False)
    assert proc.returncode == 2 and "data.cache_max_gb=lots is invalid" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_batch_preparer_channels_last_gives_the_same_values():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    prep = Preprocess(size=8, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    plain = BatchPreparer(prep, torch.device("cpu"))(x)
    fast = BatchPreparer(prep, torch.device("cpu"), channels_last=True)(x)
    expected = (x.float() / 255 - torch.tensor(prep.mean).view(1, 3, 1, 1)) / torch.tensor(prep.std).view(1, 3, 1, 1)
    assert torch.allclose(plain, expected, atol=1e-5) and torch.allclose(fast, expected, atol=1e-5)
    assert fast.is_contiguous(memory_format=torch.channels_last) and plain.is_contiguous()
    assert fast.dtype == torch.float32
    features = torch.randn(4, 10)  # cached backbone features pass through unchanged
    assert BatchPreparer(prep, torch.device("cpu"), channels_last=True)(features) is features


def test_compile_flag():
    net = torch.nn.Linear(2, 2)
    assert compile_model(net, False) is net
    with pytest.raises(UserError, match="trainer.compile"):
        compile_model(net, "yes")
    compiled = compile_model(net, True)  # compiles lazily, on the first call
    assert compiled._orig_mod is net  # same parameters: checkpoints of `net` keep their keys

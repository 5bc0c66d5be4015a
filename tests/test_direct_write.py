"""Checkpoint-sized torch.save files go past the page cache (facecls.direct_write): the bytes on
disk are exactly torch.save's, in several staged chunks with a padded, truncated tail; a file
system without O_DIRECT gets the buffered write instead (a full disk on either path: test_faults);
small files and caches the next run reads stay buffered."""
from __future__ import annotations

import io

import pytest
import torch

import facecls.direct_write as direct_write
from facecls.io import atomic_torch_save


@pytest.fixture
def small_direct(monkeypatch):
    """Direct writes from 1 byte on, staged in 64 KiB chunks: a 1 MB object spans many chunks."""
    monkeypatch.setattr(direct_write, "MIN_BYTES", 1)
    monkeypatch.setattr(direct_write, "CHUNK", 64 * 1024)
    opened = []
    real = direct_write.open_direct

    def spy(fd):
        try:
            target = real(fd)
        except direct_write.NoDirectIO:
            opened.append("refused")
            raise
        opened.append("direct")
        return target

    monkeypatch.setattr(direct_write, "open_direct", spy)
    return opened


def _state() -> dict:
    generator = torch.Generator().manual_seed(0)
    # 1,000,003 floats: neither the tensor nor the file is a multiple of the block size
    return {"model": {"w": torch.randn(1_000_003, generator=generator), "b": torch.arange(7)},
            "optimizer": {"state": {0: {"exp_avg": torch.ones(3, 5)}}, "param_groups": [{"lr": 0.1}]},
            "epoch": 3, "classes": ["a", "b"]}


def test_a_direct_write_is_byte_for_byte_torch_save(tmp_path, small_direct):
    if direct_write.O_DIRECT is None:
        pytest.skip("no O_DIRECT on this platform")
    state = _state()
    path = atomic_torch_save(state, tmp_path / "last.pt", direct=True)
    if small_direct == ["refused"]:
        pytest.skip("the file system under the test's tmp folder has no O_DIRECT")
    assert small_direct == ["direct"]
    expected = io.BytesIO()
    torch.save(state, expected)
    assert path.read_bytes() == expected.getvalue()  # the zero padding was truncated away
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


@pytest.mark.parametrize("switch", ["platform", "FACECLS_DIRECT_IO=0"])
def test_without_o_direct_the_write_goes_through_the_page_cache(tmp_path, small_direct, monkeypatch, switch):
    if switch == "platform":
        monkeypatch.setattr(direct_write, "O_DIRECT", None)  # macOS, Windows
    else:
        monkeypatch.setenv("FACECLS_DIRECT_IO", "0")
    state = _state()
    atomic_torch_save(state, tmp_path / "last.pt", direct=True)
    assert small_direct == ["refused"]
    assert torch.equal(torch.load(tmp_path / "last.pt", weights_only=True)["model"]["w"], state["model"]["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_small_objects_and_caches_are_written_as_before(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(direct_write, "open_direct", lambda fd: calls.append(fd))
    atomic_torch_save({"w": torch.zeros(10)}, tmp_path / "small.pt", direct=True)  # far below MIN_BYTES
    big = {"w": torch.zeros(direct_write.MIN_BYTES // 4 + 1)}
    atomic_torch_save(big, tmp_path / "cache.pt")  # a decode cache: the next run reads it from the page cache
    assert calls == []
    assert torch.load(tmp_path / "small.pt")["w"].shape == (10,)
    assert torch.load(tmp_path / "cache.pt")["w"].shape == big["w"].shape


def test_checkpoints_leave_out_the_crc_that_torch_load_never_checks(tmp_path, small_direct):
    """save_checkpoint writes no CRC-32 (CPU the writer thread would take from training); the file
    loads as the same checkpoint, and the caller's thread keeps torch's setting."""
    import zipfile

    from facecls.inference.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

    weights = {"w": torch.randn(300_001, generator=torch.Generator().manual_seed(1))}
    checkpoint = Checkpoint(model=weights, config={}, classes=["a", "b"], preprocess={}, epoch=3)
    assert torch.serialization.get_crc32_options() is True
    save_checkpoint(tmp_path / "last.pt", checkpoint)
    assert torch.serialization.get_crc32_options() is True and small_direct
    with zipfile.ZipFile(tmp_path / "last.pt") as archive:
        assert {info.CRC for info in archive.infolist()} == {0}
    back = load_checkpoint(tmp_path / "last.pt")
    assert back.epoch == 3 and back.classes == ["a", "b"] and torch.equal(back.model["w"], weights["w"])
    atomic_torch_save(weights, tmp_path / "cache.pt")  # everything else keeps its checksums
    with zipfile.ZipFile(tmp_path / "cache.pt") as archive:
        assert archive.testzip() is None

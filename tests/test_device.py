"""trainer.device=auto picks cuda → mps → cpu, and MPS's precision policy (the availability
probes are replaced: this machine has neither GPU)."""
from __future__ import annotations

import pytest
import torch

from facecls.errors import UserError
from facecls.inference import device as dev


@pytest.fixture
def machine(monkeypatch):
    """machine(cuda=…, mps=…, mps_bf16=…): pretend this machine has those devices."""
    def make(cuda=False, mps=False, mps_bf16=True):
        monkeypatch.setattr(dev, "cuda_available", lambda: cuda)
        monkeypatch.setattr(dev, "mps_available", lambda: mps)
        monkeypatch.setattr(dev, "mps_has_bf16", lambda: mps_bf16)
    return make


@pytest.mark.parametrize(("cuda", "mps", "picked"), [(True, True, "cuda"), (True, False, "cuda"),
                                                     (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, picked):
    machine(cuda=cuda, mps=mps)
    assert dev.select_device("auto").type == picked


def test_asking_for_a_missing_gpu_is_one_line(machine):
    machine(cuda=False, mps=False)
    for name in ("mps", "cuda", "cuda:1"):
        with pytest.raises(UserError, match=f"trainer.device={name.split(':')[0]}.*— use"):
            dev.select_device(name)
    with pytest.raises(UserError, match="auto, cpu, cuda or mps"):
        dev.select_device("tpu")
    machine(mps=True)
    assert dev.select_device("MPS") == torch.device("mps")


def test_mps_precision_policy(machine):
    mps = torch.device("mps")
    machine(mps=True, mps_bf16=True)
    assert dev.amp_flag("auto", mps) is False  # fp32 by default on MPS
    assert dev.amp_flag(True, mps) is True     # bf16 autocast when asked for, macOS 14+
    machine(mps=True, mps_bf16=False)
    with pytest.raises(UserError, match="macOS 14"):
        dev.amp_flag(True, mps)
    assert dev.amp_flag("auto", torch.device("cuda")) is True


def test_train_config_runs_on_the_auto_device(compose_train):
    """The configs say auto and mean it: this CPU-only machine resolves it to cpu."""
    cfg = compose_train()
    assert cfg.trainer.device == "auto"
    assert dev.select_device(cfg.trainer.device).type == ("cuda" if torch.cuda.is_available() else
                                                           "mps" if dev.mps_available() else "cpu")

"""Issue 25's training recipes: gradient accumulation (trainer.accumulate), per-step schedules
(sched.interval=step) against torch's own schedulers, exact resume mid-schedule, and staged
fine-tuning (model.freeze_epochs, model.layer_decay) on a tiny random-init resnet18."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, OneCycleLR, SequentialLR

from facecls.data.batches import BatchPreparer
from facecls.data.dataset import DataBundle, Split
from facecls.data.preprocess import Preprocess
from facecls.errors import UserError
from facecls.models.backbone_graph import graph_nodes, stages
from facecls.models.backbones import construct
from facecls.models.finetune import Finetune
from facecls.training.engine import fit
from facecls.training.loop_types import EarlyStopping, LoopSettings
from facecls.training.regularisers import WeightAverage
from facecls.training.run import build_run
from facecls.training.schedules import build_schedule

from helpers import read_history

CPU = torch.device("cpu")


def _split(n: int, size: int, g: torch.Generator) -> Split:
    labels = torch.arange(n) % 2
    level = torch.where(labels == 1, 190, 65).view(n, 1, 1, 1)
    images = (level + torch.randint(-60, 61, (n, 3, size, size), generator=g)).clamp(0, 255).to(torch.uint8)
    return Split(images, labels, [f"{i}.png" for i in range(n)])


def _data(n_train: int, size: int = 8) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    return DataBundle(train=_split(n_train, size, g), val=_split(8, size, g), test=_split(8, size, g),
                      classes=["dark", "bright"], root=Path("."), preprocess=Preprocess(size=size))


def _mlp() -> nn.Module:
    """Deterministic: no dropout, no BatchNorm, fp32."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 2))


def _fit(net, data, batch_size, accumulate=1, epochs=1, ema=None, scheduler=None, optimizer=None, **kwargs):
    optimizer = optimizer or torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    settings = LoopSettings(device=CPU, max_epochs=epochs, batch_size=batch_size, progress=False,
                            accumulate=accumulate, **kwargs)
    return fit(net, data, BatchPreparer(data.preprocess, CPU), optimizer, scheduler, EarlyStopping(), settings,
               ema=ema)


# --- trainer.accumulate ---------------------------------------------------------------------------

@pytest.mark.parametrize("n_train", [32, 40])  # 40: the epoch ends inside a window (2 of 4 micro-batches)
def test_accumulated_micro_batches_give_the_weights_of_one_big_batch(n_train):
    data = _data(n_train)
    big, micro, small = _mlp(), _mlp(), _mlp()
    _fit(big, data, batch_size=16, grad_clip=0.5)  # clipped: on the accumulated gradient, as one batch's
    ema = WeightAverage(micro, 0.9)
    _fit(micro, data, batch_size=4, accumulate=4, grad_clip=0.5, ema=ema)
    _fit(small, data, batch_size=4, grad_clip=0.5)
    for a, b, c in zip(big.parameters(), micro.parameters(), small.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(a, c, atol=1e-4)  # without accumulation: 4× the steps, other weights
    assert int(ema.averaged.n_averaged) == -(-n_train // 16)  # the average moves once per optimizer step


def test_accumulate_must_be_a_whole_number():
    with pytest.raises(UserError, match="trainer.accumulate=0"):
        LoopSettings(device=CPU, max_epochs=1, batch_size=4, accumulate=0)


# --- sched.interval=step --------------------------------------------------------------------------

def _sgd(lr: float = 1.0, groups: int = 1) -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": lr * (k + 1)} for k in range(groups)])


def _per_step(schedule, optimizer, steps: int) -> list[list[float]]:
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        schedule.step() if hasattr(schedule, "last_epoch") else schedule.step_batch()  # torch's, or ours
    return seen


def test_per_step_cosine_with_warmup_steps_equals_torchs_sequential_schedule(compose_train):
    ours = _sgd(groups=2)
    cfg = compose_train("sched=cosine", "sched.interval=step", "sched.warmup_steps=5", "trainer.max_epochs=3")
    schedule = build_schedule(cfg.sched, ours, steps_per_epoch=10)
    assert schedule.per_step
    theirs = _sgd(groups=2)
    torch_schedule = SequentialLR(theirs, [LinearLR(theirs, start_factor=1 / 6, total_iters=5),
                                           CosineAnnealingLR(theirs, T_max=30)], milestones=[5])
    a, b = _per_step(schedule, ours, 35), _per_step(torch_schedule, theirs, 35)
    assert sum(a, []) == pytest.approx(sum(b, []), rel=1e-6, abs=1e-9)
    assert len({round(lr[0], 9) for lr in a}) > 30  # it moved every step, not every epoch


def test_per_step_onecycle_and_linear_warmup_equal_torchs(compose_train):
    ours, theirs = _sgd(), _sgd()
    cfg = compose_train("sched=onecycle", "sched.interval=step", "optim.lr=1.0", "trainer.max_epochs=4")
    schedule = build_schedule(cfg.sched, ours, steps_per_epoch=7)
    reference = OneCycleLR(theirs, max_lr=1.0, total_steps=28, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    assert sum(_per_step(schedule, ours, 28), []) == pytest.approx(sum(_per_step(reference, theirs, 28), []))

    two = _sgd(groups=2)  # a backbone at 2× (or layer_decay's fractions): each group peaks at its own LR
    lrs = _per_step(build_schedule(cfg.sched, two, steps_per_epoch=7), two, 28)
    assert [b / a for a, b in lrs] == pytest.approx([2.0] * 28)  # (one max_lr for all: the ratio would be 1)

    ours, theirs = _sgd(), _sgd()
    schedule = build_schedule(compose_train("sched.interval=step", "sched.warmup_epochs=1",
                                            "sched.warmup_steps=2").sched, ours, steps_per_epoch=3)
    reference = LinearLR(theirs, start_factor=1 / 6, total_iters=5)  # 1 epoch × 3 steps + 2 steps
    assert sum(_per_step(schedule, ours, 8), []) == pytest.approx(sum(_per_step(reference, theirs, 8), []))


def test_step_interval_errors(compose_train):
    with pytest.raises(UserError, match="sched.interval=step does not fit ReduceLROnPlateau"):
        build_schedule(compose_train("sched=plateau", "sched.interval=step").sched, _sgd())
    with pytest.raises(UserError, match="sched.interval=hour"):
        build_schedule(compose_train("sched=cosine", "sched.interval=hour").sched, _sgd())
    with pytest.raises(UserError, match="sched.warmup_steps=3 needs sched.interval=step"):
        build_schedule(compose_train("sched.warmup_steps=3").sched, _sgd())


def test_history_keeps_the_lr_of_the_epochs_last_step(compose_train):
    net, data = _mlp(), _data(32)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    cfg = compose_train("sched=cosine", "sched.interval=step", "optim.lr=0.1", "trainer.max_epochs=2")
    schedule = build_schedule(cfg.sched, optimizer, steps_per_epoch=4)  # 32 images / (4 × accumulate 2)
    result = _fit(net, data, batch_size=4, accumulate=2, epochs=2, scheduler=schedule, optimizer=optimizer)
    theirs = _sgd(0.1)
    cosine = CosineAnnealingLR(theirs, T_max=8)
    reference = _per_step(cosine, theirs, 8)
    assert [row["lr"] for row in result.history] == pytest.approx([reference[3][0], reference[7][0]])


def test_per_step_schedule_and_accumulation_resume_exactly(compose_train, tmp_path):
    common = ["sched=onecycle", "sched.interval=step", "sched.total_steps=4", "trainer.accumulate=2",
              "trainer.batch_size=4", "trainer.deterministic=true", "seed=3"]
    straight = build_run(compose_train(*common, "trainer.max_epochs=4"), tmp_path / "straight")
    straight.fit(tmp_path / "straight")
    straight.checkpoints.close()
    first = build_run(compose_train(*common, "trainer.max_epochs=2"), tmp_path / "resumed")
    first.fit(tmp_path / "resumed")
    first.checkpoints.close()
    again = build_run(compose_train(*common, "trainer.max_epochs=4", "resume=true"), tmp_path / "resumed")
    assert again.resume is not None and again.resume.epoch == 2
    again.fit(tmp_path / "resumed")
    again.checkpoints.close()
    a = [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(tmp_path / "straight")]
    b = [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(tmp_path / "resumed")]
    assert a == b and len(a) == 4
    assert len({r["lr"] for r in a}) == 4  # mid-cycle LRs, not one per epoch boundary


# --- staged fine-tuning ---------------------------------------------------------------------------

def _resnet(**kwargs) -> Finetune:
    torch.manual_seed(0)
    return Finetune(num_classes=2, name="resnet18", weights=None, input_size=32, **kwargs)


def test_layer_decay_gives_each_stage_its_power_of_the_decay():
    model = _resnet(layer_decay=0.5, backbone_lr_mult=0.1)
    groups = model.param_groups(1e-2)
    assert [g.get("stage") for g in groups] == [None, "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-2] + [1e-3 * 0.5 ** k for k in range(1, 7)])
    assert groups[0]["params"] == list(model.net.fc.parameters())
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    net = construct("mobilenet_v3_small", device="meta")  # one `features` Sequential: split into its blocks
    names = [name for name, _ in stages(net, graph_nodes(net), "classifier.3")]
    assert names == [f"features.{k}" for k in range(13)] + ["classifier"]
    frozen = _resnet(layer_decay=0.5, freeze="layer2").param_groups(1.0)  # fixed stages are left out
    assert [g["lr"] for g in frozen] == pytest.approx([1.0, 0.5, 0.25])
    with pytest.raises(UserError, match="model.layer_decay=1.5"):
        _resnet(layer_decay=1.5)
    with pytest.raises(UserError, match="model.freeze_epochs=-1"):
        _resnet(freeze_epochs=-1)


def test_freeze_epochs_train_the_head_alone_then_everything():
    model, data = _resnet(freeze_epochs=1, layer_decay=0.7), _data(16, size=32)
    backbone = {n: p for n, p in model.net.named_parameters() if not n.startswith("fc.")}
    stats = {n: b for n, b in model.net.named_buffers() if "running" in n}
    start = {n: t.detach().clone() for n, t in {**backbone, **stats}.items()}
    head = model.net.fc.weight.detach().clone()
    seen = []

    class Snapshot:
        def train_pass_finished(self):
            pass

        def epoch_finished(self, result, improved):
            seen.append({n: t.detach().clone() for n, t in {**backbone, **stats}.items()})

    optimizer = torch.optim.AdamW(model.param_groups(1e-2), weight_decay=0.05)
    settings = LoopSettings(device=CPU, max_epochs=2, batch_size=8, progress=False, epoch_start=model.start_epoch)
    fit(model, data, BatchPreparer(data.preprocess, CPU), optimizer, None, EarlyStopping(), settings, Snapshot())
    after_frozen, after_all = seen
    assert all(torch.equal(after_frozen[n], start[n]) for n in start)  # weights and BN statistics unchanged
    assert not torch.equal(model.net.fc.weight, head)
    assert all(not torch.equal(after_all[n], start[n]) for n in backbone)
    assert any(not torch.equal(after_all[n], start[n]) for n in stats)  # BN learns statistics again
    assert all(p.requires_grad for p in model.parameters()) and model.net.bn1.training


def test_staged_finetune_from_the_config(compose_train, tmp_path):
    cfg = compose_train("model=finetune", "model.weights=null", "model.input_size=32", "model.freeze_epochs=1",
                        "model.layer_decay=0.7", "trainer.max_epochs=2")
    run = build_run(cfg, tmp_path / "run")
    assert [g["lr"] for g in run.optimizer.param_groups] == pytest.approx(
        [cfg.optim.lr * 0.7 ** k for k in range(7)])
    run.settings.epoch_start(1)
    trainable = [n for n, p in run.model.net.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    run.settings.epoch_start(2)
    assert all(p.requires_grad for p in run.model.parameters())

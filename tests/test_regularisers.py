"""Warm-up and the new schedules, EMA of the weights, MixUp/CutMix, and exact resume with
them on — each would fail without the option it tests."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from facecls.errors import UserError
from facecls.training.regularisers import WeightAverage, build_mixer
from facecls.training.run import build_run
from facecls.training.schedules import EpochSchedule, build_schedule

from helpers import read_history


def _optimizer(lr: float = 1.0, groups: int = 1) -> torch.optim.Optimizer:
    params = [{"params": [nn.Parameter(torch.zeros(1))], "lr": lr * (k + 1)} for k in range(groups)]
    return torch.optim.SGD(params, lr=lr)


def _lrs(schedule: EpochSchedule, optimizer, epochs: int, scores=None) -> list[list[float]]:
    """The LR of every group in epochs 1..epochs, stepping after each like fit does."""
    seen = []
    for epoch in range(epochs):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()  # (no gradients: changes nothing) as fit steps before the schedule
        schedule.step(scores[epoch] if scores else 0.0)
    return seen


def test_warmup_climbs_linearly_then_hands_over_to_the_schedule(compose_train):
    optimizer = _optimizer(groups=2)
    schedule = build_schedule(compose_train("sched=step", "sched.step_size=1", "sched.gamma=0.5",
                                            "sched.warmup_epochs=3").sched, optimizer)
    lrs = _lrs(schedule, optimizer, 6)
    # epoch k ≤ 3 at k/4 of each group's own LR, then StepLR from its own epoch 1 on
    expected = [[0.25, 0.5], [0.5, 1.0], [0.75, 1.5], [1.0, 2.0], [0.5, 1.0], [0.25, 0.5]]
    assert sum(lrs, []) == pytest.approx(sum(expected, []))


def test_warmup_alone_and_no_schedule(compose_train):
    optimizer = _optimizer()
    schedule = build_schedule(compose_train("sched.warmup_epochs=1").sched, optimizer)
    assert [lr[0] for lr in _lrs(schedule, optimizer, 3)] == pytest.approx([0.5, 1.0, 1.0])
    assert build_schedule(compose_train().sched, _optimizer()) is None  # sched=none, no warm-up: nothing to step
    with pytest.raises(UserError, match="sched.warmup_epochs=-1"):
        build_schedule(compose_train("sched.warmup_epochs=-1").sched, _optimizer())


def test_plateau_gets_the_monitored_score_and_onecycle_runs_its_cycle(compose_train):
    optimizer = _optimizer()
    schedule = build_schedule(compose_train("sched=plateau", "sched.patience=1").sched, optimizer)
    # higher is better: 0.5 then two epochs without improvement → the LR drops once patience runs out
    lrs = [lr[0] for lr in _lrs(schedule, optimizer, 4, scores=[0.5, 0.4, 0.4, 0.4])]
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.1])

    optimizer = _optimizer()
    cfg = compose_train("sched=onecycle", "optim.lr=1.0", "trainer.max_epochs=5")
    lrs = [lr[0] for lr in _lrs(build_schedule(cfg.sched, optimizer), optimizer, 5)]
    assert lrs[0] == pytest.approx(1.0 / 25) and max(lrs) == pytest.approx(lrs[1]) and lrs[-1] < 1e-3


def test_ema_equals_a_hand_computed_average_after_three_steps():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    ema = WeightAverage(net, decay=0.9)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    snapshots = []
    for _ in range(3):
        optimizer.zero_grad()
        net(torch.randn(4, 3)).pow(2).sum().backward()
        optimizer.step()
        ema.update()
        snapshots.append({k: v.clone() for k, v in net.state_dict().items()})
    for key in ("weight", "bias"):
        w1, w2, w3 = (s[key] for s in snapshots)
        expected = 0.9 * (0.9 * w1 + 0.1 * w2) + 0.1 * w3  # the first update copies the weights
        torch.testing.assert_close(ema.module.state_dict()[key], expected)
        assert not torch.allclose(expected, w3)  # the average is not the last weights
    # model_state swaps in the averages under the model's own keys
    assert torch.equal(ema.model_state(net)["weight"], ema.module.weight)
    with pytest.raises(UserError, match="trainer.ema.decay=1.5"):
        WeightAverage(net, 1.5)


def test_mixup_and_cutmix_mix_images_and_labels():
    torch.manual_seed(0)
    assert build_mixer(None, 0, num_classes=3) is None
    x, y = torch.rand(8, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for mixer in (build_mixer(0.4, None, 3), build_mixer(None, 1.0, 3), build_mixer(0.4, 1.0, 3)):
        mixed, target = mixer(x, y)
        assert mixed.shape == x.shape and target.shape == (8, 3)
        torch.testing.assert_close(target.sum(1), torch.ones(8))
        assert not torch.equal(mixed, x) and (target.max(1).values < 1).any()
    with pytest.raises(UserError, match="aug.mixup_alpha=-1"):
        build_mixer(-1, None, 3)


def test_aug_ema_and_mixup_runs_resume_exactly_and_best_pt_holds_the_average(compose_train, tmp_path):
    from facecls.inference.checkpoint import load_checkpoint

    overrides = ["aug=basic", "trainer.ema.decay=0.8", "aug.mixup_alpha=0.4", "sched.warmup_epochs=2",
                 "trainer.max_epochs=3", "trainer.deterministic=true", "seed=3"]
    straight = build_run(compose_train(*overrides), tmp_path / "straight")
    straight.fit(tmp_path / "straight")
    straight.checkpoints.close()

    cut = compose_train(*overrides[:-2], "trainer.max_epochs=2", "trainer.deterministic=true", "seed=3")
    first = build_run(cut, tmp_path / "resumed")
    first.fit(tmp_path / "resumed")
    first.checkpoints.close()
    resumed_cfg = compose_train(*overrides, "resume=true")
    again = build_run(resumed_cfg, tmp_path / "resumed")
    assert again.resume is not None and again.resume.epoch == 2
    again.fit(tmp_path / "resumed")
    again.checkpoints.close()

    drop = ("seconds",)
    a = [{k: v for k, v in r.items() if k not in drop} for r in read_history(tmp_path / "straight")]
    b = [{k: v for k, v in r.items() if k not in drop} for r in read_history(tmp_path / "resumed")]
    assert a == b and len(a) == 3
    last = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    best = load_checkpoint(tmp_path / "straight" / "checkpoints" / "best.pt")
    assert last.ema is not None and best.ema is None
    averaged = {k[len("module."):]: v for k, v in last.ema.items() if k.startswith("module.")}
    if best.epoch == last.epoch:  # best.pt holds the average, last.pt the raw weights
        assert all(torch.equal(best.model[k], averaged[k]) for k in averaged)
        assert any(not torch.equal(last.model[k], averaged[k]) for k in averaged)

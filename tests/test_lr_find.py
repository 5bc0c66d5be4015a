"""`facecls lr-find`: the suggestions on known curves, the early stop on a real run, and the CLI
leaving only its own folder with a ready `optim.lr=` line."""
from __future__ import annotations

import math

import numpy as np
import pytest

from facecls.errors import UserError
from facecls.training.lr_find import lr_schedule, range_test, steepest, valley

from helpers import TINY, read_json, run_cli


def test_schedule_and_suggestions_on_a_known_curve():
    lrs = lr_schedule(1e-6, 1.0, 61)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    assert np.allclose(np.diff(np.log10(lrs)), 0.1)
    # flat, a fall centred on 1e-3 (steepest there), a floor until 1e-1, then a rise
    x = np.log10(lrs)
    loss = list(np.round(2 - 1.5 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > -1, (x + 1) * 4, 0), 2))
    assert steepest(lrs, loss) == pytest.approx(1e-3, rel=0.3)
    v = valley(lrs, loss)
    assert 3e-4 < v < 3e-2  # half way down the falling stretch (plateaus do not fall: rounded values)
    with pytest.raises(UserError, match="start_lr < end_lr"):
        lr_schedule(1.0, 1e-3, 10)


def test_range_test_stops_when_the_loss_explodes(compose_train, tmp_path):
    from facecls.training.run import build_run

    run = build_run(compose_train("optim=sgd", "trainer.checkpoints=false"), tmp_path)
    result = range_test(run, 1e-4, 1e4, 30)
    run.checkpoints.close()
    assert len(result.lrs) < 30 and ("exploded" in result.stopped or "back above" in result.stopped)
    assert result.lrs[0] <= result.valley < result.lrs[-1]
    assert math.isfinite(min(result.smoothed))


@pytest.mark.slow  # a subprocess and a range test (~25 s on two cores, more when busy)
def test_cli_prints_the_override_and_leaves_only_its_folder(tmp_path, tiny_faces, cache_env):
    out = tmp_path / "lrf"
    proc = run_cli("lr-find", "data=imagefolder", f"data.root={tiny_faces}", *TINY, "lr_find.num_steps=20",
                   f"hydra.run.dir={out}", cwd=tmp_path, env=cache_env)
    summary = read_json(out / "lr_find.json")
    assert f"optim.lr={summary['suggested']:.2e}" in proc.stdout
    assert summary["steps"] <= 20 and 1e-7 <= summary["suggested"] <= 10
    assert sorted(p.name for p in out.iterdir()) == [".hydra", "lr_find.csv", "lr_find.json", "lr_find.log",
                                                     "lr_find.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "lrf"]  # no outputs/ folder, no run dir

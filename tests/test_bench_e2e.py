"""scripts/bench.py's end-to-end section (--e2e, scripts/bench_e2e.py + scripts/naive_train.py):
the stall arithmetic on made-up timestamps, and (slow) a --quick --e2e-only run whose JSON is
consistent with itself. Timings are never asserted (a shared machine)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli_env

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
BENCH = SCRIPTS / "bench.py"


def test_boundary_stats_takes_the_val_work_out_of_the_gap():
    sys.path.insert(0, str(SCRIPTS))
    try:
        from naive_train import boundary_stats
    finally:
        sys.path.remove(str(SCRIPTS))

    def one_pass(kind, start, arrive_after, work, n):
        """n batches, each arriving ``arrive_after`` s after it is asked for, then ``work`` s of work."""
        requested, arrived, t = [], [], start
        for _ in range(n):
            requested.append(t)
            arrived.append(t + arrive_after)
            t += arrive_after + work
        return {"kind": kind, "requested": requested, "arrived": arrived, "end": t}, t

    passes, t = [], 0.0
    for _ in range(3):
        train, t = one_pass("train", t, 0.0, 1.0, 4)       # 4 s of training
        passes.append(train)
        val, t = one_pass("val", t + 0.25, 0.125, 0.5, 2)  # 0.25 s set-up, 2 × (0.125 s wait + 0.5 s work)
        passes.append(val)
        t += 0.25                                          # 0.25 s more before the next epoch's first batch
    stats = boundary_stats(passes)
    # gap 0.25 + 1.25 + 0.25; of it 1 s is val work, the rest (set-up, waits) is the stall
    assert stats["gap_seconds"] == [1.75, 1.75] and stats["val_compute_seconds"] == [1.0, 1.0]
    assert stats["stall_seconds"] == [0.75, 0.75] and stats["cycle_seconds"] == [5.75, 5.75]
    assert stats["stall_median_seconds"] == 0.75 and math.isclose(stats["stall_fraction"], 0.75 / 5.75)
    assert stats["train_wait_seconds"] == [0.0, 0.0, 0.0]


@pytest.mark.slow
def test_quick_e2e_report(tmp_path):
    """--quick --e2e-only --e2e-load (~90 s on 2 cores): every figure present and consistent."""
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--e2e-only", "--e2e-load", "--out", "bench.json"],
                          cwd=tmp_path, env=cli_env(tmp_path / "cache"), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["models"] == {} and "scaling" not in report and "startup" not in report
    cpu = report["machine"]["cpu"]
    assert isinstance(cpu["torch_avx512_bf16"], bool) and isinstance(cpu["torch_amx_tile"], bool)
    e = report["e2e"]
    assert e["settings"]["repeats"] == 1 and e["settings"]["epochs"] == 2
    assert e["cpu_matmul_peak_flops"]["fp32"] > 0 and e["cpu_matmul_peak_flops"]["bf16"] > 0
    for aug in ("none", "basic"):
        entry, runs = e["by_aug"][aug], e["runs"][aug]
        assert len(runs["facecls"]) == len(runs["naive"]) == 1
        f, n = runs["facecls"][0], runs["naive"][0]
        assert f["cache_hit"] and f["checkpoints"] == ["best.pt", "last.pt"] and len(f["epoch_seconds"]) == 2
        assert "curves.png" in f["figures"] and f["wall_seconds"] > f["run_training_seconds"] > 0
        assert len(n["epoch_seconds"]) == 2 and n["wall_seconds"] > n["setup_seconds"] > 0
        assert math.isclose(entry["speedup"], n["wall_seconds"] / f["wall_seconds"])
        assert f["train_images"] == n["train_images"]  # the same split on both sides
        stall = e["stall"][aug]
        assert len(stall["stall_seconds"]) == 1 and "warning" not in stall  # 2 epochs: one boundary
        assert 0 <= stall["stall_fraction"] < 1
    quiet, loaded = e["aug_epoch"]["quiet"], e["aug_epoch"]["loaded"]
    assert math.isclose(quiet["ratio"], quiet["basic"] / quiet["none"])
    assert math.isclose(loaded["ratio"], loaded["basic"] / loaded["none"]) and loaded["kind"] == "python"
    names = [t["name"] for t in report["targets"]]
    assert len(names) == 6 and all(name.startswith(("end to end", "facecls")) for name in names)
    assert proc.stdout.count("[met]") + proc.stdout.count("[MISSED]") == 6

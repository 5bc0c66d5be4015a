"""scripts/bench.py --quick runs end to end and its bench.json holds every figure, consistent
with itself and with the printed table. Timings are never asserted (a shared machine)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli_env

# scripts/bench.py --quick takes ~35 s on 2 cores: `pytest -m slow` runs it.
pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
MODELS = ("convnet", "mlp", "alexnet_feature")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One quick run: (the JSON report, the printed table)."""
    cwd = tmp_path_factory.mktemp("bench")
    env = cli_env(cwd / "cache")
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--out", "bench.json"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((cwd / "bench.json").read_text()), proc.stdout


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_machine_and_settings(bench):
    report, _ = bench
    machine = report["machine"]
    assert machine["cpu_cores"] >= 1 and machine["torch_threads"] == 1  # --quick runs one thread
    assert machine["torch"] and machine["device"] == "cpu"
    assert machine["matmul_peak_flops"] == max(machine["matmul_peak_flops_start"], machine["matmul_peak_flops_end"])
    assert positive(machine["matmul_peak_flops"])
    assert report["settings"]["quick"] is True and report["settings"]["images"] == 96


@pytest.mark.parametrize("name", MODELS)
def test_model_figures_follow_from_the_measurements(bench, name):
    report, _ = bench
    e, peak = report["models"][name], report["machine"]["matmul_peak_flops"]
    naive, f = e["naive"], e["facecls"]
    assert naive["workers"] in (0, 2)
    assert naive["images_per_second"] == max(naive["images_per_second_by_workers"].values())
    assert close(naive["images_per_second"], e["train_images"] / min(naive["epoch_seconds"]))
    assert len(f["epoch_seconds"]) == report["settings"]["epochs"] and all(map(positive, f["epoch_seconds"]))
    assert f["steady_epoch_seconds"] == min(f["epoch_seconds"][1:])  # the first epoch is warm-up
    assert close(f["images_per_second"], e["train_images"] / f["steady_epoch_seconds"])
    assert close(f["first_epoch_incl_decode_seconds"],
                 f["decode_seconds"] + f["feature_seconds"] + f["first_epoch_seconds"])
    assert positive(f["decode_seconds"]) and (f["feature_seconds"] > 0) == (name == "alexnet_feature")
    assert close(e["speedup"], f["images_per_second"] / naive["images_per_second"])
    assert close(e["pipeline_overhead"], 1 - e["pure_compute_seconds"] / f["steady_epoch_seconds"])
    assert e["pipeline_overhead"] < 1 and positive(e["pure_compute_seconds"])
    # FLOPs: training (forward + backward) costs more than the forward pass alone
    assert positive(e["forward_flops_per_image"]) and e["train_flops_per_image"] > e["forward_flops_per_image"]
    assert close(e["epoch_flops"], e["train_images"] * e["train_flops_per_image"]
                 + e["val_images"] * e["forward_flops_per_image"])
    assert close(e["mfu"], e["epoch_flops"] / f["steady_epoch_seconds"] / peak) and positive(e["mfu"])
    assert positive(e["speedup_whole_run"]) and e["train_images"] > e["val_images"] > 0
    if name == "convnet":  # the same run writing checkpoints every epoch, against the compute floor
        written = f["epoch_seconds_with_checkpoints"]
        assert len(written) == report["settings"]["epochs"] and f["steady_epoch_with_checkpoints_seconds"] == min(
            written[1:])
        assert close(e["epoch_with_checkpoints_vs_floor"], min(written[1:]) / e["pure_compute_seconds"])


def test_convnet_flops_match_the_architecture(bench):
    """--quick's ConvNet: 32×32 input, conv 5×5 3→16 and 16→32, FC 32·24·24→128→4 classes."""
    forward_macs = 28 * 28 * 16 * 3 * 25 + 24 * 24 * 32 * 16 * 25 + 32 * 24 * 24 * 128 + 128 * 4
    assert bench[0]["models"]["convnet"]["forward_flops_per_image"] == 2 * forward_macs


def test_feature_cache_comparisons(bench):
    e = bench[0]["models"]["alexnet_feature"]
    assert e["cache"]["cached"]["images_per_second"] == e["facecls"]["images_per_second"]  # the same run
    for key in ("cache", "cache_small_head"):
        c = e[key]
        assert close(c["speedup"], c["cached"]["images_per_second"] / c["recompute"]["images_per_second"])
        assert positive(c["recompute"]["images_per_second"])


def test_scaling_points(bench):
    s = bench[0]["scaling"]
    images = [p["images"] for p in s["points"]]
    assert images == [24, 48, 96]  # N, 2N, 4N with N = --images / 4
    train = [p["train_images"] for p in s["points"]]
    assert train[0] == train[2] // 4 and train[1] == train[2] // 2
    assert train[2] == bench[0]["models"]["convnet"]["train_images"]
    for p in s["points"]:
        assert p["raw_pixel_bytes"] == p["images"] * 3 * 32 * 32  # uint8 pixels of the 32-px ConvNet
        assert p["peak_rss_bytes"] >= p["startup_rss_bytes"] > 0 and positive(p["model_bytes"])
        assert close(p["other_rss_bytes"], p["peak_rss_bytes"] - p["startup_rss_bytes"] - p["model_bytes"]
                     - p["raw_pixel_bytes"])
        assert positive(p["epoch_seconds_per_train_image"]) and positive(p["decode_seconds_per_image"])
    first, last = s["points"][0], s["points"][-1]
    assert close(s["data_rss_per_raw_byte"], (last["data_peak_rss_bytes"] - first["data_peak_rss_bytes"])
                 / (last["raw_pixel_bytes"] - first["raw_pixel_bytes"]))
    assert close(s["epoch_time_per_image_change"],
                 last["epoch_seconds_per_train_image"] / first["epoch_seconds_per_train_image"] - 1)


def test_startup_and_targets(bench):
    report, _ = bench
    u = report["startup"]
    assert positive(u["import_torch_seconds"]) and u["facecls_train_seconds"] > u["import_torch_seconds"]
    assert close(u["extra_seconds"], u["facecls_train_seconds"] - u["import_torch_seconds"])
    targets = {t["name"]: t for t in report["targets"]}
    assert len(targets) == 10  # issue 22 added the epoch with checkpoints ÷ floor
    for t in targets.values():
        limit = float(t["target"].split()[1].rstrip("×"))
        assert t["met"] == (t["value"] >= limit if t["target"].startswith(">=") else t["value"] <= limit)
    assert targets["mlp speedup over the naive loop"]["value"] == report["models"]["mlp"]["speedup"]


def test_table_prints_the_json_figures(bench):
    report, out = bench
    for name, e in report["models"].items():
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert f"{e['naive']['images_per_second']:.1f} (w{e['naive']['workers']})" in row
        assert f"{e['facecls']['images_per_second']:.1f}" in row
        assert f"{e['speedup']:.1f}×" in row and f"{e['mfu']:.1%}" in row
    assert f"+{report['startup']['extra_seconds']:.2f} s" in out
    assert out.count("[met]") + out.count("[MISSED]") == len(report["targets"])

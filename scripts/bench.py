#!/usr/bin/env python
"""Speed benchmark: facecls's data pipeline and engine against the course report's naive
loop (ImageFolder + per-sample transforms + DataLoader), side by side in one run.

    python scripts/bench.py                              # 2,000 JPEGs of 250 px, 11 classes
    python scripts/bench.py --models convnet --epochs 5 --variants contiguous,amp,compile
    python scripts/bench.py --quick                      # smoke run (~30 s), numbers meaningless

It writes an ImageFolder of synthetic-face JPEGs into a temporary folder, then for each
model (built from conf/model/<name>.yaml exactly as `facecls train` builds it; AlexNet with
random weights, pretrained=false: same cost, nothing to download) measures on the same files,
seed, batch size and epochs:
  * the naive loop's images/s (the faster of DataLoader num_workers 0 and 2);
  * facecls: the one-time decode (+ frozen-backbone features) with the first epoch, and the
    steady-state images/s of the later epochs; the speedup; the pipeline overhead
    (1 − pure forward/backward/step on pre-staged batches ÷ epoch time); the MFU (training
    FLOPs from torch.utils.flop_counter × images/s ÷ a measured fp32 matmul peak);
  * AlexNet feature head: epoch with cached features vs recomputing the backbone, with the
    report's head [4096, 4096] and with a small one (--small-head);
  * --variants: the ConvNet again with channels_last off, bf16 autocast or torch.compile;
  * scaling: time per image and peak RSS at N, 2N, 4N images (N = --images/4), each in a
    fresh process; start-up: `facecls train` on tiny data vs `import torch, torchvision`.
--e2e adds what users wait for (scripts/bench_e2e.py): whole processes, `facecls train`
(warm decode cache, checkpoints, figures) against scripts/naive_train.py (the report's loop
with a 2-worker DataLoader), aug=none and aug=basic, paired and interleaved, medians and
their ratio; the epoch-end stall of both; aug=basic vs aug=none epochs (--e2e-load: also
with a second busy process); the CPU's fp32/bf16 capability. --e2e-only skips the rest:

    python scripts/bench.py --e2e-only --e2e-load         # ~25 min on 2 cores (--e2e-repeats 1: ~10)
Prints a table and writes every figure to --out (JSON). Timings on a shared machine are
noisy: compare the ratios, which are measured side by side.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchvision

from facecls.data.synthetic import write_dataset
from facecls.io import atomic_write_json

import bench_e2e
import bench_measure as m
from bench_report import print_report, targets

MODELS = ("convnet", "mlp", "alexnet_feature")
# threads=1: tiny ops on a busy machine lose more to thread hand-offs than they gain
QUICK = {"images": 96, "classes": 4, "source_size": 48, "epochs": 2, "naive_epochs": 1, "batch_size": 16,
         "matmul_size": 512, "startup_repeats": 1, "threads": 1}
# ConvNet variants (--variants): the levers the default run leaves as they are
VARIANTS = {"contiguous": "trainer.channels_last=false", "amp": "trainer.amp=true", "compile": "trainer.compile=true"}
# --quick also shrinks the models (AlexNet: its smallest crop), so the smoke run takes seconds
QUICK_MODELS = {"convnet": ["model.input_size=32"], "alexnet_feature": ["model.input_size=63", "model.head=[64]"]}
# --quick with --e2e: tiny end-to-end runs too
QUICK_E2E = {"e2e_epochs": 2, "e2e_batch_size": 16, "e2e_input_size": 32, "e2e_repeats": 1}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000, help="JPEGs to generate (split 70/15/15)")
    p.add_argument("--classes", type=int, default=11)
    p.add_argument("--source-size", type=int, default=250, help="side of the generated JPEGs (px)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first includes warm-up)")
    p.add_argument("--naive-epochs", type=int, default=2,
                   help="epochs of the naive loop and of the recomputed AlexNet backbone: each of "
                        "them costs the same, the fastest counts")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (AMP follows trainer.amp=auto)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--small-head", type=int, default=32,
                   help="hidden size of the small AlexNet head that isolates the feature cache's gain")
    p.add_argument("--variants", default="",
                   help=f"comma-separated ConvNet variants to time as well: {', '.join(VARIANTS)}")
    p.add_argument("--matmul-size", type=int, default=2048, help="n of the n×n matmul that measures the peak")
    p.add_argument("--startup-repeats", type=int, default=3)
    p.add_argument("--out", default="bench.json")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test: " + str(QUICK))
    e = p.add_argument_group("end to end (scripts/bench_e2e.py): whole processes, what users wait for")
    e.add_argument("--e2e", action="store_true",
                   help="add the end-to-end section: `facecls train` vs scripts/naive_train.py as whole processes")
    e.add_argument("--e2e-only", action="store_true",
                   help="only the end-to-end section (skips the per-model, scaling and start-up parts)")
    e.add_argument("--e2e-repeats", type=int, default=3, help="paired runs per side and aug (medians count)")
    e.add_argument("--e2e-epochs", type=int, default=5)
    e.add_argument("--e2e-batch-size", type=int, default=64)
    e.add_argument("--e2e-input-size", type=int, default=64, help="model.input_size")
    e.add_argument("--e2e-model", default="convnet", help=f"one of {', '.join(MODELS)}")
    e.add_argument("--e2e-augs", default="none,basic", help="comma-separated, from none, basic")
    e.add_argument("--e2e-load", action="store_true",
                   help="also time facecls aug=none vs aug=basic epochs with a second busy process running")
    e.add_argument("--e2e-load-kind", default="python", choices=sorted(bench_e2e.LOAD_KINDS),
                   help="the busy process: a pure-Python loop or a 1-thread torch matmul loop")
    e.add_argument("--e2e-override", action="append", default=[],
                   help="extra `facecls train` override for the e2e runs (repeatable), e.g. trainer.amp=false; "
                        "model.* ones reach the naive loop too")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
        for key, value in QUICK_E2E.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    args.e2e = args.e2e or args.e2e_only
    if args.e2e_only:
        args.models = ""
    args.e2e_augs = [name.strip() for name in args.e2e_augs.split(",") if name.strip()]
    if not set(args.e2e_augs) <= set(bench_e2e.AUGS) or not args.e2e_augs:
        p.error(f"--e2e-augs: choose from {', '.join(bench_e2e.AUGS)}")
    if args.e2e_model not in MODELS:
        p.error(f"--e2e-model: choose from {', '.join(MODELS)}")
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)} — choose from {', '.join(MODELS)}")
    args.variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)} — choose from {', '.join(VARIANTS)}")
    return args


def overrides(model: str, root: Path, cache_dir: Path, args, epochs: int) -> list[str]:
    """`facecls train` overrides of one measured run."""
    extra = ["model.pretrained=false"] if model.startswith("alexnet") else []
    if args.quick:
        extra += QUICK_MODELS.get(model, [])
    return [f"model={model}", "data=imagefolder", f"data.root={root}", f"paths.cache_dir={cache_dir}",
            f"trainer.batch_size={args.batch_size}", f"trainer.max_epochs={epochs}", f"trainer.device={args.device}",
            "trainer.progress=false", "seed=0", *(["trainer.num_threads=" + str(args.threads)] if args.threads else []),
            *extra]


def throughput(run: dict) -> float:
    """Train images per second of a run's steady state (see bench_measure.best_epoch_seconds)."""
    return run["train_images"] / m.best_epoch_seconds(run)


def naive_side(cfg, args) -> dict:
    """The naive loop with DataLoader num_workers 0 and 2; the faster one is the reference.
    Every naive epoch decodes every image (no warm-up epoch), so the fastest of all counts."""
    runs = {w: m.naive_run(cfg, args.naive_epochs, w) for w in (0, 2)}
    ips = {w: r["train_images"] / min(r["epoch_seconds"]) for w, r in runs.items()}
    best = max(ips, key=ips.get)
    return {"workers": best, "images_per_second": ips[best],
            "images_per_second_by_workers": {str(w): v for w, v in ips.items()},
            "epoch_seconds": runs[best]["epoch_seconds"]}


def facecls_side(run: dict, args) -> dict:
    """Throughput, decode, pipeline overhead and FLOPs of one facecls run (same process)."""
    first, steady = run["epoch_seconds"][0], m.best_epoch_seconds(run)
    one_time = run["decode_seconds"] + run["feature_seconds"]
    pure = min(m.pure_compute_seconds(run, repeats=max(2, args.epochs - 1)))
    train_flops, forward_flops = m.flops_per_image(run)
    epoch_flops = run["train_images"] * train_flops + run["val_images"] * forward_flops
    return {
        "facecls": {"decode_seconds": run["decode_seconds"], "feature_seconds": run["feature_seconds"],
                    "first_epoch_seconds": first, "first_epoch_incl_decode_seconds": one_time + first,
                    "steady_epoch_seconds": steady, "images_per_second": throughput(run),
                    "epoch_seconds": run["epoch_seconds"]},
        "train_images": run["train_images"], "val_images": run["val_images"],
        "pure_compute_seconds": pure, "pipeline_overhead": 1 - pure / steady,
        "train_flops_per_image": train_flops, "forward_flops_per_image": forward_flops,
        "epoch_flops": epoch_flops,
    }


def cache_speedup(model: str, root: Path, cache: Path, work: Path, args, extra: list[str],
                  cached: dict | None = None) -> dict:
    """A frozen backbone: head epochs on cached features (``cached``: a run's figures, when
    already measured) vs recomputing the backbone on every batch."""
    runs = {} if cached is None else {"cached": cached}
    for name, switch, epochs in (("cached", "true", args.epochs), ("recompute", "false", args.naive_epochs)):
        if name in runs:
            continue
        cfg = m.compose_config(overrides(model, root, cache, args, epochs) + extra
                               + [f"model.cache_features={switch}"])
        run = m.facecls_run(cfg, work / f"run-{name}")
        runs[name] = {"epoch_seconds": run["epoch_seconds"], "images_per_second": throughput(run)}
        del run  # AlexNet's default head holds ~3 GB with its optimizer state
    return {**runs, "speedup": runs["cached"]["images_per_second"] / runs["recompute"]["images_per_second"]}


def bench_model(model: str, args, root: Path, work: Path) -> dict:
    cache = work / f"cache-{model}"
    naive = naive_side(m.compose_config(overrides(model, root, cache, args, args.naive_epochs)), args)
    run = m.facecls_run(m.compose_config(overrides(model, root, cache, args, args.epochs)), work / f"run-{model}")
    entry = {"naive": naive, **facecls_side(run, args)}
    del run
    f = entry["facecls"]
    if model == "convnet":  # the default run writes best.pt and last.pt every epoch: the epoch against the floor
        written = m.facecls_run(m.compose_config(overrides(model, root, cache, args, args.epochs)),
                                work / f"run-{model}-checkpoints", checkpoints=True)
        steady = f["steady_epoch_with_checkpoints_seconds"] = m.best_epoch_seconds(written)
        f["epoch_seconds_with_checkpoints"] = written["epoch_seconds"]
        entry["epoch_with_checkpoints_vs_floor"] = steady / entry["pure_compute_seconds"]
        del written
    entry["speedup"] = f["images_per_second"] / naive["images_per_second"]
    # Whole runs of --epochs epochs, the one-time work included: what a user waits for.
    naive_run_seconds = statistics.mean(naive["epoch_seconds"]) * args.epochs
    entry["speedup_whole_run"] = naive_run_seconds / (f["decode_seconds"] + f["feature_seconds"]
                                                      + sum(f["epoch_seconds"]))
    if model == "alexnet_feature":
        entry["cache"] = cache_speedup(model, root, cache, work, args, [], cached={
            "epoch_seconds": f["epoch_seconds"], "images_per_second": f["images_per_second"]})
        # The report's head [4096, 4096] costs most of what the backbone costs; a small head
        # shows what the feature cache itself saves.
        entry["cache_small_head"] = cache_speedup(model, root, cache, work, args,
                                                  [f"model.head=[{args.small_head}]"])
    if model == "convnet":
        entry["variants"] = {}
        for name in args.variants:
            run = m.facecls_run(m.compose_config(overrides(model, root, cache, args, args.epochs)
                                                 + [VARIANTS[name]]), work / f"run-{name}")
            ips = throughput(run)
            entry["variants"][name] = {"override": VARIANTS[name], "epoch_seconds": run["epoch_seconds"],
                                       "images_per_second": ips, "vs_default": ips / f["images_per_second"]}
    return entry


def subset_folder(root: Path, out: Path, per_class: int) -> Path:
    """The first ``per_class`` files of each class folder, hard-linked (copied if links fail)."""
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        (out / class_dir.name).mkdir(parents=True)
        for f in sorted(class_dir.iterdir())[:per_class]:
            try:
                os.link(f, out / class_dir.name / f.name)
            except OSError:
                shutil.copy2(f, out / class_dir.name / f.name)
    return out


def scaling(args, root: Path, work: Path) -> dict:
    """ConvNet at N, 2N and 4N images (N = --images/4): the time per image, the sizes taking
    turns in this process; the peak RSS, each size in a fresh process."""
    shares = (4, 2, 1)
    run = m.facecls_run(m.compose_config(overrides("convnet", root, work / "cache-convnet", args, 1)),
                        work / "run-scaling")  # its one epoch is the warm-up
    per_image = m.interleaved_seconds_per_image(run, shares, rounds=max(1, args.epochs - 1))
    train_images = [max(1, len(run["_data"].train) // share) for share in shares]
    del run
    per_class = math.ceil(args.images / args.classes)
    points = []
    for share, seconds, n_train in zip(shares, per_image, train_images):
        k = max(1, per_class // share)
        subset = subset_folder(root, work / f"subset-{k}", k)
        cfg = overrides("convnet", subset, work / f"cache-scaling-{k}", args, 1)
        # spawn: a fresh interpreter per size, so one size's peak RSS never leaks into another's
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            point = pool.submit(m.memory_point, cfg).result()
        points.append({**point, "train_images": n_train, "epoch_seconds_per_train_image": seconds})
    per_image = [p["epoch_seconds_per_train_image"] for p in points]
    decode = [p["decode_seconds_per_image"] for p in points]
    for p in points:
        # what is neither start-up, model state nor pixels: activations, buffers, allocator slack
        p["other_rss_bytes"] = p["peak_rss_bytes"] - p["startup_rss_bytes"] - p["model_bytes"] - p["raw_pixel_bytes"]
    first, largest = points[0], points[-1]
    return {"points": points,
            "epoch_time_per_image_change": per_image[-1] / per_image[0] - 1,
            "epoch_time_per_image_max_deviation": max(abs(v / per_image[0] - 1) for v in per_image),
            "decode_time_per_image_change": decode[-1] / decode[0] - 1,
            # Peak memory that loading the data adds per extra byte of decoded pixels, N → 4N
            # (the fixed part — thread pool, decoder buffers — cancels): 1.0 = the pixels
            # alone, 2.0 = one extra copy of them at some moment.
            "data_rss_per_raw_byte": (largest["data_peak_rss_bytes"] - first["data_peak_rss_bytes"])
                                     / (largest["raw_pixel_bytes"] - first["raw_pixel_bytes"])}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = m.select_device(args.device)
    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="facecls-bench-"))
    try:
        per_class = math.ceil(args.images / args.classes)
        root = write_dataset(work / "faces", args.classes, per_class, args.source_size, seed=0, progress=False)
        peak_start = m.matmul_peak_flops(device, args.matmul_size)
        # the date makes docs/performance/*.json a dated record (docs/hooks/performance.py)
        report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                              "device": str(device), "torch": torch.__version__,
                              "torchvision": torchvision.__version__, "python": sys.version.split()[0],
                              "matmul_peak_flops_start": peak_start, "cpu": bench_e2e.cpu_capability()},
                  "settings": {k: v for k, v in vars(args).items() if k != "out"}}
        report["settings"]["images"] = per_class * args.classes
        phases = report["bench_seconds"] = {}
        report["models"] = {}
        for name in args.models:
            started = time.perf_counter()
            report["models"][name] = bench_model(name, args, root, work)
            phases[name] = time.perf_counter() - started
        if not args.e2e_only:
            started = time.perf_counter()
            report["scaling"] = scaling(args, root, work)
            phases["scaling"] = time.perf_counter() - started
            started = time.perf_counter()
            tiny = write_dataset(work / "tiny", 3, 12, 32, seed=0, progress=False)  # the CI tiny data
            startup = m.startup_seconds(tiny, work, args.startup_repeats)
            phases["startup"] = time.perf_counter() - started
            startup["extra_seconds"] = startup["facecls_train_seconds"] - startup["import_torch_seconds"]
            report["startup"] = startup
        if args.e2e:
            started = time.perf_counter()
            report["e2e"] = bench_e2e.run_e2e(args, root, work, device)
            phases["e2e"] = time.perf_counter() - started
        report["machine"]["load_average_1min"] = [load_start, os.getloadavg()[0]]
        peak_end = report["machine"]["matmul_peak_flops_end"] = m.matmul_peak_flops(device, args.matmul_size)
        # Other processes only ever slow the matmul down: the faster measurement is the peak.
        peak = report["machine"]["matmul_peak_flops"] = max(peak_start, peak_end)
        for entry in report["models"].values():
            entry["mfu"] = entry["epoch_flops"] / entry["facecls"]["steady_epoch_seconds"] / peak
            entry["mfu_compute_only"] = entry["epoch_flops"] / entry["pure_compute_seconds"] / peak
        report["targets"] = targets(report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_report(report)
    atomic_write_json(Path(args.out), report)
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    if "--phases" in sys.argv[1:]:  # where a whole `facecls train` process's seconds go: scripts/bench_phases.py
        import bench_phases

        bench_phases.main([a for a in sys.argv[1:] if a != "--phases"])
    else:
        main()

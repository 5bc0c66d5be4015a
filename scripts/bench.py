#!/usr/bin/env python
"""Speed benchmark: facecls's data pipeline and engine against the course report's naive
loop (ImageFolder + per-sample transforms + DataLoader), side by side in one run.

    python scripts/bench.py                              # 2,000 JPEGs of 250 px, 11 classes
    python scripts/bench.py --models convnet --epochs 5 --out bench.json
    python scripts/bench.py --quick                      # smoke run: seconds, numbers meaningless

It writes an ImageFolder of synthetic-face JPEGs into a temporary folder, then for each
model (built from conf/model/<name>.yaml exactly as `facecls train` builds it; AlexNet with
random weights, pretrained=false: same cost, nothing to download) measures on the same files,
seed, batch size and epochs:
  * the naive loop's images/s (the faster of DataLoader num_workers 0 and 2);
  * facecls: the one-time decode (+ frozen-backbone features) with the first epoch, and the
    steady-state images/s of the later epochs; the speedup; the pipeline overhead
    (1 − pure forward/backward/step on pre-staged batches ÷ epoch time); the MFU (training
    FLOPs from torch.utils.flop_counter × images/s ÷ a measured fp32 matmul peak);
  * AlexNet feature head: epoch with cached features vs recomputing the backbone;
  * scaling: time per image and peak RSS at N, 2N, 4N images (N = --images/4), each in a
    fresh process; start-up: `facecls train` on tiny data vs `import torch, torchvision`.
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
from pathlib import Path

import torch
import torchvision

import bench_measure as m
from bench_report import print_report, targets
from facecls.data.synthetic import write_dataset
from facecls.io import atomic_write_json

MODELS = ("convnet", "mlp", "alexnet_feature")
QUICK = {"images": 96, "classes": 4, "source_size": 48, "epochs": 2, "batch_size": 16,
         "matmul_size": 512, "startup_repeats": 1}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000, help="JPEGs to generate (split 70/15/15)")
    p.add_argument("--classes", type=int, default=11)
    p.add_argument("--source-size", type=int, default=250, help="side of the generated JPEGs (px)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first includes warm-up)")
    p.add_argument("--naive-epochs", type=int, default=None,
                   help="epochs of the naive loop and of the recomputed AlexNet backbone, which cost "
                        "the same every epoch (default: --epochs)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (AMP follows trainer.amp=auto)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="also time the ConvNet with trainer.compile=true")
    p.add_argument("--matmul-size", type=int, default=2048, help="n of the n×n matmul that measures the peak")
    p.add_argument("--startup-repeats", type=int, default=3)
    p.add_argument("--out", default="bench.json")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test: " + str(QUICK))
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)} — choose from {', '.join(MODELS)}")
    args.naive_epochs = args.naive_epochs or args.epochs
    return args


def overrides(model: str, root: Path, cache_dir: Path, args, epochs: int) -> list[str]:
    """`facecls train` overrides of one measured run."""
    extra = []
    if model.startswith("alexnet"):
        extra.append("model.pretrained=false")
        if args.quick:
            extra.append("model.input_size=63")  # the smallest crop AlexNet takes
    return [f"model={model}", "data=imagefolder", f"data.root={root}", f"paths.cache_dir={cache_dir}",
            f"trainer.batch_size={args.batch_size}", f"trainer.max_epochs={epochs}", f"trainer.device={args.device}",
            "trainer.progress=false", "seed=0", *(["trainer.num_threads=" + str(args.threads)] if args.threads else []),
            *extra]


def throughput(run: dict) -> float:
    """Train images per second of a run's steady state: the median epoch after the first
    (the first pays warm-up: thread pools, kernel choice, page cache)."""
    seconds = run["epoch_seconds"][1:] or run["epoch_seconds"]
    return run["train_images"] / statistics.median(seconds)


def bench_model(model: str, args, root: Path, work: Path, peak: float) -> dict:
    cache = work / f"cache-{model}"
    cfg = m.compose_config(overrides(model, root, cache, args, args.epochs))
    naive_cfg = m.compose_config(overrides(model, root, cache, args, args.naive_epochs))
    naive = {w: m.naive_run(naive_cfg, args.naive_epochs, w) for w in (0, 2)}
    # All naive epochs decode every image: none is a warm-up epoch, so all count.
    naive_ips = {w: r["train_images"] / statistics.median(r["epoch_seconds"]) for w, r in naive.items()}
    best = max(naive_ips, key=naive_ips.get)
    run = m.facecls_run(cfg, work / f"run-{model}")
    first, steady = run["epoch_seconds"][0], statistics.median(run["epoch_seconds"][1:] or run["epoch_seconds"])
    one_time = run["decode_seconds"] + run["feature_seconds"]
    pure = statistics.median(m.pure_compute_seconds(run, repeats=max(1, args.epochs - 1)))
    train_flops, forward_flops = m.flops_per_image(run)
    epoch_flops = run["train_images"] * train_flops + run["val_images"] * forward_flops
    ips = throughput(run)
    entry = {
        "naive": {"workers": best, "images_per_second": naive_ips[best],
                  "images_per_second_by_workers": {str(w): v for w, v in naive_ips.items()},
                  "epoch_seconds": naive[best]["epoch_seconds"]},
        "facecls": {"decode_seconds": run["decode_seconds"], "feature_seconds": run["feature_seconds"],
                    "first_epoch_seconds": first, "first_epoch_incl_decode_seconds": one_time + first,
                    "steady_epoch_seconds": steady, "images_per_second": ips,
                    "epoch_seconds": run["epoch_seconds"]},
        "train_images": run["train_images"], "val_images": run["val_images"],
        "speedup": ips / naive_ips[best],
        # Whole runs of --epochs epochs, decode included: what a user waits for.
        "speedup_whole_run": sum(naive[best]["epoch_seconds"]) * args.epochs / args.naive_epochs
                             / (one_time + sum(run["epoch_seconds"])),
        "pure_compute_seconds": pure, "pipeline_overhead": 1 - pure / steady,
        "train_flops_per_image": train_flops, "forward_flops_per_image": forward_flops,
        "mfu": epoch_flops / steady / peak, "mfu_compute_only": epoch_flops / pure / peak,
    }
    if model == "alexnet_feature":
        recompute = m.facecls_run(m.compose_config(overrides(model, root, cache, args, args.naive_epochs)
                                                   + ["model.cache_features=false"]), work / "run-recompute")
        entry["recompute_backbone"] = {"epoch_seconds": recompute["epoch_seconds"],
                                       "images_per_second": throughput(recompute)}
        entry["cache_speedup"] = ips / entry["recompute_backbone"]["images_per_second"]
    if model == "convnet" and args.compile:
        compiled = m.facecls_run(m.compose_config(overrides(model, root, cache, args, args.epochs)
                                                  + ["trainer.compile=true"]), work / "run-compiled")
        entry["compiled"] = {"epoch_seconds": compiled["epoch_seconds"], "images_per_second": throughput(compiled)}
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
    """ConvNet time per image and peak RSS at N, 2N, 4N images, each in a fresh process."""
    per_class = math.ceil(args.images / args.classes)
    points = []
    for share in (4, 2, 1):
        k = max(1, per_class // share)
        subset = subset_folder(root, work / f"subset-{k}", k)
        cfg = overrides("convnet", subset, work / f"cache-scaling-{k}", args, args.epochs)
        # spawn: a fresh interpreter per size, so one size's peak RSS never leaks into another's
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            points.append(pool.submit(m.scaling_point, cfg).result())
    per_image = [p["epoch_seconds_per_train_image"] for p in points]
    decode = [p["decode_seconds_per_image"] for p in points]
    raw = [p["raw_pixel_bytes"] for p in points]
    rss = [p["peak_rss_bytes"] for p in points]
    slope = (rss[-1] - rss[0]) / max(raw[-1] - raw[0], 1)
    return {"points": points,
            "epoch_time_per_image_change": per_image[-1] / per_image[0] - 1,
            "epoch_time_per_image_max_deviation": max(abs(v / per_image[0] - 1) for v in per_image),
            "decode_time_per_image_change": decode[-1] / decode[0] - 1,
            # extra peak RSS per extra raw pixel byte from N to 4N: the start-up footprint,
            # the model and the batch buffers cancel out
            "marginal_rss_per_raw_byte": slope,
            "fixed_rss_bytes": rss[0] - slope * raw[0]}


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
        peak = m.matmul_peak_flops(device, args.matmul_size)
        report = {"machine": {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                              "device": str(device), "torch": torch.__version__,
                              "torchvision": torchvision.__version__, "python": sys.version.split()[0],
                              "matmul_peak_flops": peak},
                  "settings": {k: v for k, v in vars(args).items() if k != "out"}}
        report["settings"]["images"] = per_class * args.classes
        phases = report["bench_seconds"] = {}
        report["models"] = {}
        for name in args.models:
            started = time.perf_counter()
            report["models"][name] = bench_model(name, args, root, work, peak)
            phases[name] = time.perf_counter() - started
        started = time.perf_counter()
        report["scaling"] = scaling(args, root, work)
        phases["scaling"] = time.perf_counter() - started
        started = time.perf_counter()
        tiny = write_dataset(work / "tiny", 3, 12, 32, seed=0, progress=False)  # the CI tiny data
        startup = m.startup_seconds(tiny, work, args.startup_repeats)
        phases["startup"] = time.perf_counter() - started
        startup["extra_seconds"] = startup["facecls_train_seconds"] - startup["import_torch_seconds"]
        report["startup"] = startup
        report["machine"]["load_average_1min"] = [load_start, os.getloadavg()[0]]
        report["targets"] = targets(report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_report(report)
    atomic_write_json(Path(args.out), report)
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()

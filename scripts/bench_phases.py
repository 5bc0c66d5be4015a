#!/usr/bin/env python
"""Where a `facecls train` process's seconds go (scripts/bench.py --phases): whole processes,
timed from outside (wall, CPU), with the phases each run books in metrics.json's ``timing``
(facecls.timing: startup, compose, imports, data, model, first_step, epochs, test, figures,
checkpoint_wait) and ``exit`` = wall − the seconds the process had run when it wrote
metrics.json. Two workloads on a warm decode cache: the bench folder (4 epochs, ConvNet at
64 px, batch 64) and a one-batch run on 60 of its images.

    python scripts/bench.py --phases                        # this checkout only
    python scripts/bench.py --phases --base-src OLD/src     # paired with an older checkout, interleaved

With ``--base-src`` every repeat runs both sides back to back, alternating which goes first;
the older code has no ``timing`` (wall, CPU and epochs only). Timings on a shared machine are
noisy: read the medians and the paired differences, and name the machine and precision.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PHASES = ("startup", "compose", "imports", "data", "model", "first_step", "epochs", "checkpoint_wait_in_epochs",
          "test", "figures", "checkpoint_wait", "exit")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="ImageFolder to use (default: generate 1,001 250-px JPEGs)")
    p.add_argument("--work", default="bench-phases", help="folder for the data, cache and run dirs")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--base-src", default=None, help="src/ of an older checkout to pair with (PYTHONPATH)")
    p.add_argument("--src", default=None, help="src/ to measure as 'after' (default: the installed facecls)")
    p.add_argument("--workloads", default="bench,one_batch", help="comma-separated: bench, one_batch")
    p.add_argument("--override", action="append", default=[], help="extra override for both sides")
    p.add_argument("--out", default="bench-phases.json")
    return p.parse_args(argv)


def bench_folder(work: Path, data: str | None) -> tuple[Path, Path]:
    """(the bench folder, a 60-image subset of it: 3 classes × 20)."""
    root = Path(data) if data else work / "faces"
    if not data and not root.is_dir():
        from facecls.data.synthetic import write_dataset

        write_dataset(root, num_classes=11, images_per_class=91, image_size=250, seed=0, progress=False)
    small = work / "faces60"
    if not small.is_dir():
        for cls in sorted(p for p in root.iterdir() if p.is_dir())[:3]:
            (small / cls.name).mkdir(parents=True)
            for image in sorted(cls.iterdir())[:20]:
                shutil.copy(image, small / cls.name / image.name)
    return root, small


def one_process(side: str, src: str | None, args: list[str], work: Path, run: str) -> dict:
    """One whole `facecls train` process: wall and CPU seconds from outside, its timing from inside."""
    env = dict(os.environ, FACECLS_CACHE_DIR=str(work / f"cache-{side}"), CUDA_VISIBLE_DEVICES="")
    if src:
        env["PYTHONPATH"] = src
    run_dir = work / "runs" / run
    shutil.rmtree(run_dir, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "facecls", "train", *args, f"hydra.run.dir={run_dir}"],
                          env=env, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    out = {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
           "epochs_sum": metrics.get("train_seconds"), "load": os.getloadavg()[0]}
    timing = metrics.get("timing")
    if timing:
        out.update({k: v for k, v in timing.items() if k not in ("in_process", "cpu")})
        out.update({f"cpu_{k}": v for k, v in timing.get("cpu", {}).items()})
        out["exit"] = wall - timing["in_process"]
    return out


def summary(runs: list[dict]) -> dict:
    keys = dict.fromkeys(k for r in runs for k in r)
    return {k: statistics.median(r[k] for r in runs if r.get(k) is not None) for k in keys
            if any(r.get(k) is not None for r in runs)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    root, small = bench_folder(work, args.data)
    common = ["data=imagefolder", "model.input_size=64", "trainer.batch_size=64", "trainer.progress=false",
              *args.override]
    workloads = {"bench": [f"data.root={root}", f"trainer.max_epochs={args.epochs}", *common],
                 "one_batch": [f"data.root={small}", "trainer.max_epochs=1", "trainer.limit_batches=1", *common]}
    sides = {"after": args.src and str(Path(args.src).resolve())}
    if args.base_src:
        sides["before"] = str(Path(args.base_src).resolve())
    report: dict = {"settings": vars(args), "cpu": _cpu_name(), "runs": {}}
    for name in args.workloads.split(","):
        for side, src in sides.items():  # warm the decode cache of each side (not timed)
            one_process(side, src, workloads[name], work, f"warm-{side}")
        runs: dict[str, list] = {side: [] for side in sides}
        for repeat in range(args.repeats):
            order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
            for side in order:
                runs[side].append(one_process(side, sides[side], workloads[name], work, f"{name}-{side}-{repeat}"))
                print(f"{name} {side} #{repeat}: wall {runs[side][-1]['wall']:.2f} s", flush=True)
        report["runs"][name] = {side: {"median": summary(r), "all": r} for side, r in runs.items()}
    print_table(report)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def print_table(report: dict) -> None:
    for name, sides in report["runs"].items():
        print(f"\n{name} (medians, seconds)")
        print(f"{'':28s}" + "".join(f"{side:>10s}" for side in sides))
        for key in ("wall", "cpu", "epochs_sum", *PHASES, *(f"cpu_{p}" for p in PHASES), "load"):
            values = [sides[side]["median"].get(key) for side in sides]
            if any(v is not None for v in values):
                print(f"{key:28s}" + "".join(f"{v:10.2f}" if v is not None else f"{'—':>10s}" for v in values))


if __name__ == "__main__":
    main()

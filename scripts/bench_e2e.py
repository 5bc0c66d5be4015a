"""The end-to-end section of scripts/bench.py (--e2e): what users wait for.

Whole processes, timed from outside (subprocess + time.perf_counter): `python -m facecls
train` against scripts/naive_train.py (the course report's loop: ImageFolder + per-sample
transforms + DataLoader with worker processes) on the same files, split, model, epochs,
batch size, seed and torch thread count, with aug=none and with aug=basic (the naive loop:
torchvision's per-sample equivalent in its Dataset transform). facecls runs as a user runs
it: warm decode cache (one untimed run fills it first), checkpoints and figures written.
The runs are paired and interleaved (facecls, naive, naive, facecls, …: the order swaps
each repeat); the medians and their ratio are reported.

Also measured:
* the epoch-end stall — the time between the last training batch of epoch k and the first
  batch of epoch k+1 that is neither training nor validating (the val pass's batch work is
  taken out). facecls records no per-batch times, so it is measured in an in-process run
  (``build_run`` + ``fit`` as `facecls train` does, checkpoints on) whose batch iterator is
  wrapped; the naive loop times its own batches. What facecls does write — train.log's
  timestamped epoch lines and history.csv's epoch seconds — gives the part of each
  boundary outside the epoch's timed window (history.csv, checkpoint snapshots, logging);
* aug=basic epoch ÷ aug=none epoch of facecls (history.csv ``seconds``, epochs 2..E), quiet
  and (--e2e-load) with a second busy process on the machine;
* the CPU's fp32/bf16 capability: its model name and flags, torch's AVX512-BF16 and AMX
  probes, what trainer.amp=auto picks, and fp32/bf16 matmul peaks.
"""
from __future__ import annotations

import csv
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

import bench_measure as m
from naive_train import BatchClock, boundary_stats

NAIVE = Path(__file__).resolve().parent / "naive_train.py"
AUGS = ("none", "basic")
LOAD_KINDS = {
    "python": "while True: pass",
    "matmul": "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True: a @ a",
}
LOG_EPOCH = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[INFO\] epoch\s+(\d+)/\d+ ")


# --- the machine ------------------------------------------------------------------------

def cpu_capability() -> dict:
    """The CPU's model and its bf16 features (no timing): /proc/cpuinfo and torch's probes."""
    info: dict = {"model_name": None, "family": None, "model": None}
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (s.strip() for s in line.partition(":"))
            if key == "model name" and info["model_name"] is None:
                info["model_name"] = value
            elif key == "cpu family" and info["family"] is None:
                info["family"] = value
            elif key == "model" and info["model"] is None:
                info["model"] = value
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    from facecls.inference.device import amp_flag, cpu_has_native_bf16

    probe = {name: bool(getattr(torch.cpu, f"_is_{name}_supported", lambda: False)())
             for name in ("avx512_bf16", "amx_tile")}
    return {**info, "flags": sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_bf16", "amx_bf16",
                                                                "amx_tile", "amx_int8", "avx512_fp16"}),
            "torch_avx512_bf16": probe["avx512_bf16"], "torch_amx_tile": probe["amx_tile"],
            "facecls_native_bf16": cpu_has_native_bf16(),
            "facecls_amp_auto_on_cpu": amp_flag("auto", torch.device("cpu"))}


def cpu_matmul_peaks(n: int, repeats: int = 5) -> dict:
    """fp32 and bf16 n×n matmul FLOP/s on the CPU, the best of ``repeats`` each."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - started)
        out[name] = 2 * n**3 / best
    return out


# --- one whole process --------------------------------------------------------------------

class Settings:
    """What both sides share: data, model, epochs, batch size, threads, device."""

    def __init__(self, args, root: Path, work: Path, device: torch.device):
        self.root, self.work, self.device = root, work, device
        self.model, self.input_size = args.e2e_model, args.e2e_input_size
        self.epochs, self.batch_size, self.repeats = args.e2e_epochs, args.e2e_batch_size, args.e2e_repeats
        self.threads = args.threads or torch.get_num_threads()
        self.augs = args.e2e_augs
        self.extra = list(args.e2e_override or [])  # facecls overrides of both sides' config
        self.cache_dir = work / "cache-e2e"
        self.env = dict(os.environ)
        if device.type == "cpu":
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # the CI/laptop case: both sides see no GPU
        self.env.pop("FACECLS_CACHE_DIR", None)  # paths.cache_dir is given explicitly
        self._count = 0

    def model_overrides(self) -> list[str]:
        extra = ["model.pretrained=false"] if self.model.startswith("alexnet") else []
        return [f"model={self.model}", f"model.input_size={self.input_size}", *extra]

    def facecls_overrides(self, aug: str, epochs: int | None = None, seed: int = 0) -> list[str]:
        return ["data=imagefolder", f"data.root={self.root}", *self.model_overrides(),
                f"trainer.max_epochs={epochs or self.epochs}", f"trainer.batch_size={self.batch_size}",
                "trainer.progress=false", f"trainer.device={self.device.type}",
                f"trainer.num_threads={self.threads}", f"seed={seed}", f"aug={aug}",
                f"paths.cache_dir={self.cache_dir}", *self.extra]

    def next_dir(self, name: str) -> Path:
        self._count += 1
        return self.work / f"e2e-{self._count:03d}-{name}"


def run_process(command: list[str], env: dict, cwd: Path) -> tuple[float, str]:
    """Wall seconds of one whole process, and its stdout; a failure stops the benchmark."""
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} … failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def read_history_seconds(run_dir: Path) -> list[float]:
    with open(run_dir / "history.csv", newline="") as f:
        return [float(row["seconds"]) for row in csv.DictReader(f)]


def log_epoch_times(log_path: Path) -> dict[int, float]:
    """{epoch: seconds since the epoch (of the clock) when its log line was written} (ms resolution)."""
    times = {}
    if log_path.is_file():
        for line in log_path.read_text(errors="replace").splitlines():
            match = LOG_EPOCH.match(line)
            if match:
                stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
                times[int(match.group(2))] = stamp.timestamp()
    return times


def outside_epoch_seconds(seconds: list[float], logged: dict[int, float]) -> list[float]:
    """Per boundary k-1 → k (k ≥ 2): the time between two epochs' log lines that history.csv's
    ``seconds`` of epoch k does not cover (history.csv, checkpoint snapshots, logging, the
    next epoch's set-up before its clock starts)."""
    return [logged[k] - logged[k - 1] - seconds[k - 1] for k in range(2, len(seconds) + 1)
            if k in logged and k - 1 in logged]


def steady_epoch(seconds: list[float]) -> float:
    """The median epoch after the first (which pays warm-up)."""
    return statistics.median(seconds[1:] or seconds)


def facecls_process(s: Settings, aug: str, epochs: int | None = None, seed: int = 0) -> dict:
    """`python -m facecls train …` as a user runs it; its wall time and what its run dir says."""
    run_dir = s.next_dir(f"facecls-{aug}")
    command = [sys.executable, "-m", "facecls", "train", *s.facecls_overrides(aug, epochs, seed),
               f"hydra.run.dir={run_dir}"]
    wall, _ = run_process(command, s.env, s.work)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    seconds = read_history_seconds(run_dir)
    log_text = (run_dir / "train.log").read_text(errors="replace") if (run_dir / "train.log").is_file() else ""
    outside = outside_epoch_seconds(seconds, log_epoch_times(run_dir / "train.log"))
    return {"wall_seconds": wall, "epoch_seconds": seconds, "steady_epoch_seconds": steady_epoch(seconds),
            # where the wall time goes
            "run_training_seconds": metrics.get("wall_seconds"),  # build_run → metrics.json
            "startup_and_exit_seconds": wall - metrics["wall_seconds"] if metrics.get("wall_seconds") else None,
            "epochs_total_seconds": sum(seconds),
            "test_acc": metrics.get("test_acc"), "train_images": metrics.get("train_size"),
            "cache_hit": "from cache" in log_text,
            "outside_epoch_seconds": outside,
            "checkpoints": sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")),
            "figures": sorted(p.name for p in run_dir.glob("*.png"))}


def naive_process(s: Settings, aug: str, seed: int = 0) -> dict:
    """scripts/naive_train.py as a whole process; its wall time and its own JSON report."""
    out_dir = s.next_dir(f"naive-{aug}")
    out_dir.mkdir(parents=True)
    command = [sys.executable, str(NAIVE), "--root", str(s.root), "--epochs", str(s.epochs),
               "--batch-size", str(s.batch_size), "--input-size", str(s.input_size), "--model", s.model,
               "--aug", aug, "--workers", "2", "--seed", str(seed), "--threads", str(s.threads),
               "--device", s.device.type, "--out", str(out_dir / "naive_model.pt"),
               *[f"--override={o}" for o in s.model_overrides()[2:] + s.extra]]
    wall, stdout = run_process(command, s.env, out_dir)
    inside = json.loads(stdout.strip().splitlines()[-1])
    seconds = inside["epoch_seconds"]
    return {"wall_seconds": wall, "epoch_seconds": seconds, "steady_epoch_seconds": steady_epoch(seconds),
            "setup_seconds": inside["setup_seconds"], "train_seconds": inside["train_seconds"],
            "test_and_save_seconds": inside["test_seconds"] + inside["save_seconds"],
            "exit_seconds": wall - inside["inside_seconds"], "test_acc": inside["test_acc"],
            "train_images": inside["train_images"], "threads": inside["threads"],
            "stall_seconds": inside.get("stall_seconds", []), "gap_seconds": inside.get("gap_seconds", []),
            "val_compute_seconds": inside.get("val_compute_seconds", []),
            "cycle_seconds": inside.get("cycle_seconds", []), "stall_fraction": inside.get("stall_fraction")}


# --- the epoch-end stall of facecls, in process -------------------------------------------------

def facecls_stall(s: Settings, aug: str) -> dict:
    """One in-process run (build_run + fit, as `facecls train`, checkpoints on) with the
    engine's batch iterator wrapped by a BatchClock: shuffled passes are training epochs,
    unshuffled ones the val pass."""
    import facecls.inference.evaluate as evaluate  # the val pass iterates its batches there
    import facecls.training.engine as engine
    from facecls.training.run import build_run

    hooks = (engine, evaluate)
    if not all(hasattr(module, "iterate_batches") for module in hooks):
        return {"error": "facecls's engine or evaluate no longer imports iterate_batches: the stall needs a new hook"}
    clock, original = BatchClock(), engine.iterate_batches

    def timed_batches(split, batch_size, shuffle=False, *rest, **kw):
        return clock.wrap(original(split, batch_size, shuffle, *rest, **kw), "train" if shuffle else "val")

    run_dir = s.next_dir(f"stall-{aug}")
    cfg = m.compose_config(s.facecls_overrides(aug))
    for module in hooks:
        module.iterate_batches = timed_batches
    try:
        run = build_run(cfg, run_dir)
        try:
            result = run.fit(run_dir)
        finally:
            run.checkpoints.close()
    finally:
        for module in hooks:
            module.iterate_batches = original
    stats = boundary_stats(clock.passes)
    seconds = [row["seconds"] for row in result.history]
    n_train = sum(p["kind"] == "train" for p in clock.passes)
    n_val = sum(p["kind"] == "val" for p in clock.passes)
    if n_train != len(seconds) or n_val < len(seconds):
        # an untimed val pass would be counted as stall (it was, from the move of evaluate to inference/)
        stats["warning"] = (f"{n_train} timed training passes and {n_val} val passes for {len(seconds)} epochs: "
                            "the loop no longer iterates its batches where this hooks in; the stall figures are "
                            "suspect")
    return {**stats, "epoch_seconds": seconds}


# --- the section ---------------------------------------------------------------------------------

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict], keys: tuple[str, ...]) -> dict:
    return {key: median([r[key] for r in runs]) for key in keys}


def busy_process(kind: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", LOAD_KINDS[kind]], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_e2e(args, root: Path, work: Path, device: torch.device) -> dict:
    s = Settings(args, root, work, device)
    started = time.perf_counter()
    section: dict = {"settings": {"model": s.model, "input_size": s.input_size, "epochs": s.epochs,
                                  "batch_size": s.batch_size, "repeats": s.repeats, "threads": s.threads,
                                  "augs": list(s.augs), "device": device.type, "naive_workers": 2,
                                  "facecls_overrides": s.facecls_overrides("AUG") + ["hydra.run.dir=…"],
                                  "load": args.e2e_load_kind if args.e2e_load else None}}
    section["cpu_matmul_peak_flops"] = cpu_matmul_peaks(args.matmul_size)
    from facecls.inference.device import amp_flag

    amp_override = next((o.split("=", 1)[1] for o in s.extra if o.startswith("trainer.amp=")), "auto")
    amp_value = {"true": True, "false": False}.get(amp_override.lower(), amp_override)
    section["facecls_amp"] = bool(amp_flag(amp_value, device))

    warm = facecls_process(s, "none", epochs=1)  # fills the decode cache (and the page cache), untimed
    section["warmup_wall_seconds"] = warm["wall_seconds"]
    runs = {aug: {"facecls": [], "naive": []} for aug in s.augs}
    for rep in range(s.repeats):  # repeat k: seed k on both sides, so test_acc is a median over draws
        for aug in s.augs:
            order = ("facecls", "naive") if rep % 2 == 0 else ("naive", "facecls")
            for side in order:
                run = facecls_process(s, aug, seed=rep) if side == "facecls" else naive_process(s, aug, seed=rep)
                runs[aug][side].append(run)
                print(f"  e2e {rep + 1}/{s.repeats} aug={aug} {side}: "
                      f"{runs[aug][side][-1]['wall_seconds']:.1f} s", flush=True)
    section["runs"] = runs
    section["by_aug"] = {}
    for aug, both in runs.items():
        f = summarize(both["facecls"], ("wall_seconds", "steady_epoch_seconds", "startup_and_exit_seconds",
                                        "run_training_seconds", "epochs_total_seconds"))
        f["outside_epoch_seconds"] = median([x for r in both["facecls"] for x in r["outside_epoch_seconds"]])
        f["cache_hit"] = all(r["cache_hit"] for r in both["facecls"])
        f["test_acc"] = median([r["test_acc"] for r in both["facecls"]])
        n = summarize(both["naive"], ("wall_seconds", "steady_epoch_seconds", "setup_seconds", "train_seconds",
                                      "test_and_save_seconds", "exit_seconds", "test_acc"))
        n["stall_seconds"] = median([x for r in both["naive"] for x in r["stall_seconds"]])
        n["gap_seconds"] = median([x for r in both["naive"] for x in r["gap_seconds"]])
        n["stall_fraction"] = median([r["stall_fraction"] for r in both["naive"]])
        paired = [nv["wall_seconds"] / fc["wall_seconds"] for fc, nv in zip(both["facecls"], both["naive"])]
        section["by_aug"][aug] = {"facecls": f, "naive": n,
                                  "speedup": n["wall_seconds"] / f["wall_seconds"],
                                  "speedup_paired": paired}
    section["stall"] = {}
    for aug in s.augs:
        st = facecls_stall(s, aug)
        section["stall"][aug] = st
        print(f"  e2e stall aug={aug}: done", flush=True)
    if "none" in section["by_aug"] and "basic" in section["by_aug"]:
        quiet = {aug: section["by_aug"][aug]["facecls"]["steady_epoch_seconds"] for aug in ("none", "basic")}
        section["aug_epoch"] = {"quiet": {**quiet, "ratio": quiet["basic"] / quiet["none"]}}
        if args.e2e_load:
            section["aug_epoch"]["loaded"] = loaded_aug_epochs(s, args.e2e_load_kind)
    section["seconds"] = time.perf_counter() - started
    return section


def loaded_aug_epochs(s: Settings, kind: str) -> dict:
    """facecls aug=none and aug=basic (interleaved, --e2e-repeats each) while a busy process
    keeps one core occupied; the steady epochs from history.csv."""
    busy = busy_process(kind, s.env)
    try:
        time.sleep(1.0)  # the busy process is up (interpreter + imports) before the clock runs
        runs = {"none": [], "basic": []}
        for rep in range(s.repeats):
            for aug in (("none", "basic") if rep % 2 == 0 else ("basic", "none")):
                runs[aug].append(facecls_process(s, aug))
                print(f"  e2e loaded {rep + 1}/{s.repeats} aug={aug}: {runs[aug][-1]['wall_seconds']:.1f} s",
                      flush=True)
    finally:
        busy.terminate()
        busy.wait()
    epoch = {aug: median([r["steady_epoch_seconds"] for r in rs]) for aug, rs in runs.items()}
    wall = {aug: median([r["wall_seconds"] for r in rs]) for aug, rs in runs.items()}
    return {"kind": kind, **epoch, "ratio": epoch["basic"] / epoch["none"], "wall_seconds": wall,
            "epoch_seconds": {aug: [r["epoch_seconds"] for r in rs] for aug, rs in runs.items()}}

"""The measurements behind scripts/bench.py, one function each.

* :func:`naive_run` — the course report's pipeline: torchvision ImageFolder, a per-sample
  ``transforms.Compose(Resize, ToTensor, Normalize)``, a DataLoader and a plain loop.
* :func:`facecls_run` — facecls's own pipeline, assembled by the same ``build_run`` as
  ``facecls train`` (data, model, training view, optimizer from the config, engine.fit).
* :func:`pure_compute_seconds` — the same epoch on batches already prepared on the device:
  what is left when the pipeline costs nothing.
* :func:`flops_per_image`, :func:`matmul_peak_flops` — the two halves of the MFU.
* :func:`interleaved_seconds_per_image` — time per image at several dataset sizes, in turns.
* :func:`memory_point` — one dataset size in a fresh process: its peak RSS.
* :func:`startup_seconds` — ``facecls train`` on the CI tiny data against importing torch.

An epoch is the same work on both sides: one shuffled pass over the train split plus one
pass over the val split; images/s = train images ÷ epoch seconds (as metrics.json counts it).
"""
from __future__ import annotations

import dataclasses
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision  # noqa: F401  (loaded before the RSS baseline of a child process is taken)
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from facecls.config.compose import compose
from facecls.data.batches import iterate_batches
from facecls.data.dataset import Split, load_image_list
from facecls.data.preprocess import Preprocess
from facecls.data.split import assign_splits
from facecls.inference.device import select_device
from facecls.models import build_model, preprocess_for
from facecls.training.engine import EarlyStopping, fit
from facecls.training.run import build_run


def compose_config(overrides: list[str]) -> DictConfig:
    """The config `facecls train OVERRIDES` would run with (same conf/ and defaults list)."""
    return compose("train", overrides)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def split_files(cfg: DictConfig) -> dict[str, list[str]]:
    """The train/val file lists facecls's hash split gives this config (no decoding)."""
    images = load_image_list(cfg.data)
    s = cfg.data.split
    which = assign_splits(images.files, s.train, s.val, s.test, seed=s.seed)
    return {name: [f for f, w in zip(images.files, which) if w == name] for name in ("train", "val")}


def naive_transform(prep: Preprocess) -> T.Compose:
    """The report's per-sample transform for the same input size and normalisation."""
    if prep.resize is None:
        steps = [T.Resize((prep.size, prep.size))]
    else:
        steps = [T.Resize(prep.resize), T.CenterCrop(prep.size)]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(prep.mean, prep.std)])


def naive_run(cfg: DictConfig, epochs: int, workers: int) -> dict:
    """Train ``epochs`` epochs the report's way; seconds of each (train pass + val pass)."""
    device = select_device(cfg.trainer.device)
    prep = preprocess_for(cfg.model)
    root = Path(cfg.data.root)
    dataset = ImageFolder(str(root), transform=naive_transform(prep))
    index = {Path(path).relative_to(root).as_posix(): i for i, (path, _) in enumerate(dataset.samples)}
    files = split_files(cfg)
    train, val = (Subset(dataset, [index[f] for f in files[name]]) for name in ("train", "val"))
    torch.manual_seed(cfg.seed)
    net = build_model(cfg.model, num_classes=len(dataset.classes)).to(device)
    optimizer = instantiate(cfg.optim, params=net.param_groups(cfg.optim.lr), _convert_="partial")
    order = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(train, cfg.trainer.batch_size, shuffle=True, num_workers=workers, generator=order)
    val_loader = DataLoader(val, cfg.trainer.eval_batch_size, num_workers=workers)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        net.train()
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
            loss.item()  # the report's loop logs the loss of every batch
        net.eval()
        with torch.no_grad():
            for x, y in val_loader:
                (net(x.to(device)).argmax(1) == y.to(device)).sum().item()
        sync(device)
        seconds.append(time.perf_counter() - started)
    return {"workers": workers, "epoch_seconds": seconds, "train_images": len(train), "val_images": len(val)}


def facecls_run(cfg: DictConfig, run_dir: Path, checkpoints: bool = False) -> dict:
    """Train ``cfg.trainer.max_epochs`` epochs through facecls's run assembly and engine.

    The decoded-image cache (and a frozen backbone's feature cache) under
    ``cfg.paths.cache_dir`` should be empty, so the one-time decode is really paid: its
    seconds are returned apart from the epochs'. ``checkpoints=False``: no checkpoint writes (what
    the floor is compared with); True: best.pt and last.pt every epoch, as `facecls train` does, so
    what the background writer costs the epochs shows."""
    cfg = cfg.copy()
    cfg.trainer.progress, cfg.trainer.checkpoints = False, checkpoints
    rss_before = current_rss_bytes()
    reset_peak_rss()
    run = build_run(cfg, run_dir)
    data_peak_rss = peak_rss_bytes() - rss_before  # meaningful in a fresh process (memory_point)
    # the decoded pixels (0 for a frozen backbone, whose splits now hold its features)
    raw_pixel_bytes = sum(run.data.split(s).inputs.numel() for s in ("train", "val", "test")
                          if run.data.split(s).inputs.dtype == torch.uint8)
    result = run.fit(run_dir)
    return {"decode_seconds": run.data_seconds, "feature_seconds": run.features_seconds,
            "epoch_seconds": [row["seconds"] for row in result.history],
            "train_images": len(run.data.train), "val_images": len(run.data.val), "raw_pixel_bytes": raw_pixel_bytes,
            "data_peak_rss_bytes": data_peak_rss,
            "model_bytes": model_state_bytes(run.model),
            # for the measurements that follow in this process:
            "_net": run.trained, "_data": run.data, "_prepare": run.prepare, "_optimizer": run.optimizer,
            "_settings": run.settings}


def model_state_bytes(model: nn.Module) -> int:
    """Parameters + their gradients + Adam's two moments of the trainable ones."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return params + 3 * trainable


def staged_batches(run: dict) -> tuple[list, list]:
    """An epoch's train batches (shuffled as fit shuffles) and val batches, prepared on the device."""
    data, prepare, settings = run["_data"], run["_prepare"], run["_settings"]
    order = torch.Generator().manual_seed(settings.seed)
    device = settings.device
    train = [(prepare(x, train=True), y.to(device))
             for x, y in iterate_batches(data.train, settings.batch_size, shuffle=True, generator=order)]
    val = [prepare(x, train=False) for x, _ in iterate_batches(data.val, settings.eval_batch_size)]
    return train, val


def pure_compute_seconds(run: dict, repeats: int) -> list[float]:
    """Seconds of an epoch's forward/backward/step + val forward on pre-staged batches."""
    net, optimizer, settings = run["_net"], run["_optimizer"], run["_settings"]
    train, val = staged_batches(run)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        net.train()
        for x, y in train:
            optimizer.zero_grad(set_to_none=True)
            with settings.autocast():  # the same numerics as fit (AMP on CUDA)
                loss = nn.functional.cross_entropy(net(x).float(), y)
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.inference_mode(), settings.autocast():
            for x in val:
                net(x)
        sync(settings.device)
        seconds.append(time.perf_counter() - started)
    return seconds


def flops_per_image(run: dict) -> tuple[float, float]:
    """(training FLOPs = forward + backward, forward FLOPs) per image, counted by
    torch.utils.flop_counter on one real batch; the optimizer step is not counted."""
    net, settings = run["_net"], run["_settings"]
    # shuffle: a gathered batch is a new tensor, never a view of (inference-mode) cached features
    order = torch.Generator().manual_seed(settings.seed)
    x, y = next(iterate_batches(run["_data"].train, settings.batch_size, shuffle=True, generator=order))
    x, y = run["_prepare"](x, train=True), y.to(settings.device)
    net.train()
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(net(x), y).backward()
    train = counter.get_total_flops()
    net.zero_grad(set_to_none=True)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    return train / len(x), counter.get_total_flops() / len(x)


def matmul_peak_flops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """The machine's matmul FLOP/s: the best of a few n×n torch.mm (2n³ FLOPs each), in fp32
    on the CPU and in bf16 on CUDA (where AMP trains in bf16)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up: thread pool, kernel choice
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far.

    Linux: VmHWM of /proc/self/status. Not ru_maxrss: Linux carries it over from the forked
    parent into an exec'd (spawned) child, so a child would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, others KiB


def current_rss_bytes() -> int:
    """This process's resident set size now (0 where /proc is missing)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def reset_peak_rss() -> bool:
    """Restart the peak RSS count from the current RSS (Linux: /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_point(overrides: list[str]) -> dict:
    """One facecls run (decode + one epoch) in this fresh process: peak RSS against the raw
    pixel bytes, and the decode time per image. Meant for a spawned child, so each size's
    peak is its own."""
    startup_rss = peak_rss_bytes()  # torch, torchvision and facecls already imported
    cfg = compose_config(overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        run = facecls_run(cfg, Path(run_dir))
    images = run["raw_pixel_bytes"] // (3 * preprocess_for(cfg.model).size ** 2)
    return {"images": images, "decode_seconds_per_image": run["decode_seconds"] / images,
            "peak_rss_bytes": max(peak_rss_bytes(), startup_rss), "startup_rss_bytes": startup_rss,
            "data_peak_rss_bytes": run["data_peak_rss_bytes"],
            "raw_pixel_bytes": run["raw_pixel_bytes"], "model_bytes": run["model_bytes"]}


def interleaved_seconds_per_image(run: dict, shares: tuple[int, ...], rounds: int) -> list[float]:
    """Epoch seconds per train image on the first 1/share of the train and val splits, for
    each share: the sizes take turns in one process with one model (same memory layout, same
    moment), and share s runs s epochs per round, so every size measures as many images."""
    data, settings = run["_data"], run["_settings"]
    seconds = {share: 0.0 for share in shares}
    for _ in range(rounds):
        for share in shares:
            part = {}
            for name in ("train", "val"):
                split = data.split(name)
                n = max(1, len(split) // share)
                part[name] = Split(split.inputs[:n], split.labels[:n], split.files[:n])
            subset = dataclasses.replace(data, **part)
            result = fit(run["_net"], subset, run["_prepare"], run["_optimizer"], None, EarlyStopping(),
                         dataclasses.replace(settings, max_epochs=share))
            seconds[share] += sum(row["seconds"] for row in result.history) / len(subset.train)
    return [seconds[share] / (rounds * share) for share in shares]


def best_epoch_seconds(run: dict) -> float:
    """The steady-state epoch: the fastest after the first (which pays warm-up: thread pools,
    kernel choice, page cache). The fastest, not the median: on a shared machine other
    processes only ever add time, so the minimum is the least disturbed measurement."""
    return min(run["epoch_seconds"][1:] or run["epoch_seconds"])


def startup_seconds(tiny_root: Path, work: Path, repeats: int) -> dict:
    """Wall seconds of `facecls train` for 1 epoch on ``tiny_root`` and of
    `python -c "import torch, torchvision"`, alternated, best of ``repeats`` each."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # the CI case: no GPU
    times: dict[str, list[float]] = {"import_torch_seconds": [], "facecls_train_seconds": []}
    for i in range(repeats):
        commands = {
            "import_torch_seconds": [sys.executable, "-c", "import torch, torchvision"],
            "facecls_train_seconds": [
                sys.executable, "-m", "facecls", "train", "data=imagefolder", f"data.root={tiny_root}",
                "model.input_size=16", "trainer.max_epochs=1", "trainer.batch_size=16",
                "trainer.progress=false", f"hydra.run.dir={work / f'run{i}'}",
                f"paths.cache_dir={work / f'cache{i}'}"],  # a fresh cache: the decode is counted
        }
        for name, command in commands.items():
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True, cwd=work)
            times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}

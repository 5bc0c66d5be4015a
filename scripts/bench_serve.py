#!/usr/bin/env python
"""Benchmark `facecls serve`: requests/s and p50/p99 latency at several concurrencies, for the ConvNet
and a ResNet-18, PyTorch (the checkpoint) vs ONNX Runtime (the export), request batching on vs off.

    python scripts/bench_serve.py                                  # everything below, ~5–10 min on 2 cores
    python scripts/bench_serve.py --models resnet18 --engines onnxruntime --concurrency 1 32
    python scripts/bench_serve.py --json serve.json                # also keep the figures

Each configuration is a real server (`facecls serve` in a subprocess on a loopback port) hit by an
asyncio httpx client: `concurrency` clients each send one-image requests back to back for
``--seconds``, after a warm-up. A request carries a 256×256 JPEG, so the figures include upload,
decode and resize, not only the forward pass. Models have random weights (timing does not depend on
them; nothing is downloaded). fp32 throughout. The client shares the machine's cores with the server:
on a small machine it takes a noticeable part of them, so compare rows with each other, not with
other machines. "batching off" = one forward pass per request, one at a time (serve.batching=false).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

MODELS = {  # name → overrides of the `train` config the checkpoint is made from
    "convnet": ["model=convnet"],
    "resnet18": ["model=finetune", "model.name=resnet18", "model.weights=null"],
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--engines", nargs="+", default=["pytorch", "onnxruntime"], choices=["pytorch", "onnxruntime"])
    p.add_argument("--batching", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=6.0, help="measured time per concurrency level")
    p.add_argument("--resnet-size", type=int, default=224, help="ResNet-18 input size")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=None, help="server threads (default: the machine's cores)")
    p.add_argument("--json", type=Path, default=None, help="write the figures here too")
    return p.parse_args()


def machine() -> str:
    """CPU model, cores and ISA extensions that decide CPU inference speed."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{name}, {os.cpu_count()} cores ({', '.join(isa) or 'no AVX2'}), {platform.system()}"


def make_models(base: Path, names: list[str], resnet_size: int) -> dict[str, tuple[Path, Path]]:
    """{name: (checkpoint, ONNX file)} of random-weight models with 10 classes."""
    import torch
    from omegaconf import OmegaConf

    from facecls.config.compose import compose
    from facecls.export.formats import write_onnx
    from facecls.inference.checkpoint import Checkpoint, save_checkpoint
    from facecls.inference.runners import checkpoint_runner
    from facecls.models import build_model, preprocess_for

    torch.manual_seed(0)
    files = {}
    for name in names:
        size = resnet_size if name == "resnet18" else 64
        cfg = compose("train", [*MODELS[name], f"model.input_size={size}"])
        model = build_model(cfg.model, num_classes=10)
        prep = preprocess_for(cfg.model)
        ckpt = base / name / "checkpoints" / "best.pt"
        save_checkpoint(ckpt, Checkpoint(model=model.state_dict(), config=OmegaConf.to_container(cfg, resolve=True),
                                         classes=[f"person_{i}" for i in range(10)],
                                         preprocess={k: list(v) if isinstance(v, tuple) else v
                                                     for k, v in vars(prep).items()}, epoch=0))
        runner = checkpoint_runner(ckpt, torch.device("cpu"))
        files[name] = (ckpt, write_onnx(runner.module, runner.info, ckpt.parent / "model.onnx"))
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, batching: str, args) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "facecls", "serve", f"model={model}", f"port={port}", "device=cpu",
           f"serve.batching={'true' if batching == 'on' else 'false'}", f"serve.max_batch={args.max_batch}",
           f"serve.max_wait_ms={args.max_wait_ms}"] + ([f"serve.threads={args.threads}"] if args.threads else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        if proc.poll() is not None:
            raise SystemExit(f"facecls serve failed:\n{proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.25)
    raise SystemExit("facecls serve did not start")


async def load(url: str, image: bytes, concurrency: int, seconds: float) -> dict:
    """``concurrency`` clients send requests back to back for ``seconds``; latencies in ms."""
    import httpx

    latencies: list[float] = []
    batch_sizes: list[int] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one(record: bool) -> None:
            start = time.perf_counter()
            response = await client.post("/predict", files={"files": ("face.jpg", image, "image/jpeg")})
            response.raise_for_status()
            if record:
                latencies.append((time.perf_counter() - start) * 1000)
                batch_sizes.append(response.json()["batch_images"])

        await asyncio.gather(*(one(False) for _ in range(max(4, concurrency))))  # warm-up
        end = time.perf_counter() + seconds

        async def client_loop() -> None:
            while time.perf_counter() < end:
                await one(True)

        start = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    lat = np.array(latencies)
    return {"requests": len(lat), "rps": len(lat) / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "mean_batch": float(np.mean(batch_sizes))}


def main() -> None:
    args = parse_args()
    pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    image = buffer.getvalue()
    rows = []
    print(f"machine: {machine()}; precision fp32; server threads: {args.threads or os.cpu_count()}; "
          f"batching: ≤ {args.max_batch} images, ≤ {args.max_wait_ms:g} ms wait", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = make_models(Path(tmp), args.models, args.resnet_size)
        for name in args.models:
            for engine in args.engines:
                model = files[name][0] if engine == "pytorch" else files[name][1]
                for batching in args.batching:
                    proc, url = start_server(model, batching, args)
                    try:
                        for c in args.concurrency:
                            r = asyncio.run(load(url, image, c, args.seconds))
                            rows.append({"model": name, "engine": engine, "batching": batching, "concurrency": c,
                                         **r})
                            print(f"{name:9} {engine:12} batching {batching:3} c={c:<3} {r['rps']:7.1f} req/s  "
                                  f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                                  f"mean batch {r['mean_batch']:.1f}", flush=True)
                    finally:
                        proc.terminate()
                        proc.wait(timeout=60)
    print("\n| model | engine | batching | c | req/s | p50 ms | p99 ms | mean batch |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['engine']} | {r['batching']} | {r['concurrency']} | {r['rps']:.1f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "precision": "fp32", "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Benchmark: one training epoch of the alexnet_feature head with the feature cache vs. recomputing
the frozen backbone on every batch — same data, same seed, same engine loop, in one run.

    python scripts/bench_transfer.py                      # 224 px, conv4, heads [32] and [4096,4096]
    python scripts/bench_transfer.py --images 128 --heads 256 --cut pool5
    python scripts/bench_transfer.py --threads 1         # on a busy machine (see below)

Each epoch (as the engine runs it: shuffled train batches + one validation pass) is timed
with facecls.training.engine.fit and the fastest epoch of each side counts (on a shared machine other
processes only ever add time). The cached side first pays the one-off feature computation,
printed separately. Data are random uint8 images (timing does not depend on their content) and
the backbone has random weights (pretrained=false: same cost, no download needed).

On a machine shared with other jobs, two torch threads lose most of their time waiting for
each other at every op, which inflates the many tiny ops of a cached epoch far more than
the big convolutions; ``--threads 1`` gives a steadier ratio there.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torchvision.models import AlexNet_Weights

from facecls.data import features as features_module
from facecls.data.batches import BatchPreparer
from facecls.data.dataset import DataBundle, Split
from facecls.data.features import cached_features
from facecls.models.feature_extractor import FeatureExtractor
from facecls.models.pretrained import weights_preprocess
from facecls.training.engine import fit
from facecls.training.loop_types import EarlyStopping, LoopSettings


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=256, help="training images (val gets a quarter)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--size", type=int, default=None, help="input crop; default: the weights' 224")
    p.add_argument("--cut", default="conv4")
    p.add_argument("--heads", nargs="+", default=["32", "4096,4096"],
                   help="head FC sizes to compare, each comma-separated (e.g. 32 4096,4096)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cached-epochs", type=int, default=3, help="timed epochs with the cache (fastest counts)")
    p.add_argument("--uncached-epochs", type=int, default=2, help="timed epochs without it (fastest counts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args()


def random_data(n_train: int, classes: int, size: int | None, seed: int) -> DataBundle:
    """Seeded random images in the layout build_data returns (uint8 N×3×S×S)."""
    prep = weights_preprocess(AlexNet_Weights.IMAGENET1K_V1, size)
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        pixels = torch.randint(0, 256, (n, 3, prep.size, prep.size), dtype=torch.uint8, generator=g)
        return Split(pixels, torch.randint(0, classes, (n,), generator=g), [f"{i}.jpg" for i in range(n)])

    n_val = max(1, n_train // 4)
    return DataBundle(split(n_train), split(n_val), split(n_val), [f"c{i}" for i in range(classes)],
                      Path("."), prep)


def epoch_seconds(net, trainable, data, prepare, settings: LoopSettings) -> list[float]:
    """Run the engine for settings.max_epochs; the seconds of each epoch (train + validation)."""
    optimizer = torch.optim.Adam([p for p in trainable.parameters() if p.requires_grad], lr=1e-3)
    result = fit(net, data, prepare, optimizer, None, EarlyStopping(), settings)
    return [row["seconds"] for row in result.history]


def build(head: list[int], args, classes: int, device) -> FeatureExtractor:
    torch.manual_seed(args.seed)  # the same initial head on both sides
    model = FeatureExtractor(classes, name="alexnet", weights=None, cut=args.cut, pool="none", head=head,
                             input_size=args.size)  # model=alexnet_feature, random init
    return model.to(device).to(memory_format=torch.channels_last)  # as `facecls train` does


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = random_data(args.images, args.classes, args.size, args.seed)
    prepare = BatchPreparer(data.preprocess, device, None, channels_last=True)
    print(f"AlexNet cut at {args.cut}, {data.preprocess.size} px, {len(data.train)} train + {len(data.val)} "
          f"val images, batch {args.batch_size}, {args.classes} classes, {device}, "
          f"torch threads={torch.get_num_threads()}")

    def settings(epochs: int) -> LoopSettings:
        return LoopSettings(device=device, max_epochs=epochs, batch_size=args.batch_size, progress=False,
                            seed=args.seed)

    for spec in args.heads:
        head = [int(v) for v in spec.split(",") if v]
        model = build(head, args, args.classes, device)
        features_module._recent.clear()  # time a real computation, not the previous head's features
        started = time.perf_counter()
        features = cached_features(model.backbone, data, prepare, settings(1).eval, cache_dir=None)
        feature_s = time.perf_counter() - started
        cached = epoch_seconds(model.head, model.head, features, prepare, settings(args.cached_epochs))

        model = build(head, args, args.classes, device)
        uncached = epoch_seconds(model, model, data, prepare, settings(args.uncached_epochs))

        print("  epoch seconds with the cache:", " ".join(f"{t:.3f}" for t in cached),
              "| without:", " ".join(f"{t:.2f}" for t in uncached))
        # The fastest epoch of each side: other processes on the machine only ever add time.
        fast, slow = min(cached), min(uncached)
        n_head = sum(p.numel() for p in model.head.parameters())
        print(f"head {head} ({n_head / 1e6:.2f} M params): features once {feature_s:.2f} s | epoch with "
              f"cache {fast:.3f} s, recomputing the backbone {slow:.2f} s → {slow / fast:.1f}× faster")


if __name__ == "__main__":
    main()

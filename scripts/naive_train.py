#!/usr/bin/env python
"""The course report's training loop as a user's notebook runs it: torchvision ImageFolder,
per-sample transforms, a DataLoader with worker processes, a plain train/val loop, then the
test score and one torch.save of the weights. scripts/bench.py --e2e runs it as a whole
process against `facecls train` on the same data, split, model, epochs and batch size.

    python scripts/naive_train.py --root FACES --epochs 5 --batch-size 64 --aug basic

Same as facecls: the data split (facecls.data.split.assign_splits on the relative paths,
with data.split of conf/data/imagefolder.yaml), the model (facecls.models.build_model on the
composed `facecls train` config) and its normalisation, Adam at optim.lr. Different, as in
the report: every epoch decodes and resizes every JPEG again, per sample, in the workers;
training runs in fp32. With --aug basic the Dataset transform adds torchvision's
RandomHorizontalFlip(0.5), RandomAffine(10, translate=(0.05, 0.05), scale=(0.95, 1.05)) and
ColorJitter(0.2, 0.2, 0.2) per sample (facecls's aug=basic recipe), after the resize: like
facecls it augments the input_size image, not the source (tests/test_augment.py checks both).

The last line of stdout is one JSON object: the seconds of each phase and the batch
timestamps' summary (epoch-end stall, see :func:`boundary_stats`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

STARTED = time.perf_counter()  # before the heavy imports: they are part of what the user waits for

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402
from torchvision import transforms as T  # noqa: E402
from torchvision.datasets import ImageFolder  # noqa: E402


class BatchClock:
    """Timestamps of a loop's batch iterators: for each pass (one iterator), when each batch
    was asked for, when it arrived, and when the iterator was found exhausted (the moment the
    loop finished its last batch and asked for one more)."""

    def __init__(self):
        self.passes: list[dict] = []

    def wrap(self, iterable, kind: str):
        """``iterable`` timed as one pass of ``kind`` ('train' or 'val'). Nothing runs before
        the first batch is asked for (DataLoader workers start then, inside the timing)."""
        record = {"kind": kind, "requested": [], "arrived": [], "end": None}
        self.passes.append(record)

        def timed():
            it = None
            while True:
                asked = time.perf_counter()
                if it is None:
                    it = iter(iterable)
                try:
                    item = next(it)
                except StopIteration:
                    record["end"] = asked
                    return
                record["requested"].append(asked)
                record["arrived"].append(time.perf_counter())
                yield item

        return timed()


def consumer_seconds(record: dict) -> float:
    """Time the loop spent on the pass's batches themselves (from each batch's arrival to the
    request for the next one): the model's work, not the wait for data."""
    after = record["requested"][1:] + [record["end"]]
    return sum(b - a for a, b in zip(record["arrived"], after))


def boundary_stats(passes: list[dict]) -> dict:
    """The epoch boundaries of a run's timed passes (train, val, train, val, …).

    For each boundary k → k+1: ``gap`` = first train batch of epoch k+1 arrives − the loop
    asks past the last train batch of epoch k; ``val_compute`` = the val pass's batch work
    inside that gap; ``stall`` = gap − val_compute: the time neither training nor validating
    (loader start-up, waiting for the first batches, checkpoints, logging, …); ``cycle`` =
    first train batch of k → first of k+1. ``train_wait`` = time a training epoch waited for
    batches after its first one."""
    train = [p for p in passes if p["kind"] == "train" and p["arrived"]]
    out = {"gap": [], "val_compute": [], "stall": [], "cycle": [], "train_wait": []}
    for this, nxt in zip(train, train[1:]):
        if this["end"] is None:  # the loop left the epoch early: no clean boundary
            continue
        lo, hi = this["end"], nxt["arrived"][0]
        val = sum(consumer_seconds(p) for p in passes
                  if p["kind"] == "val" and p["arrived"] and p["end"] is not None and lo <= p["arrived"][0] <= hi)
        out["gap"].append(hi - lo)
        out["val_compute"].append(val)
        out["stall"].append(hi - lo - val)
        out["cycle"].append(hi - this["arrived"][0])
    for p in train:
        out["train_wait"].append(sum(b - a for a, b in zip(p["requested"][1:], p["arrived"][1:])))
    summary = {f"{key}_seconds": values for key, values in out.items()}
    if out["stall"]:
        summary["stall_median_seconds"] = statistics.median(out["stall"])
        summary["stall_fraction"] = statistics.median(s / c for s, c in zip(out["stall"], out["cycle"]))
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="ImageFolder root: root/<class>/<image>")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=256, help="val/test batches (facecls's default)")
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--model", default="convnet", help="conf/model/<name>.yaml")
    p.add_argument("--aug", choices=("none", "basic"), default="none")
    p.add_argument("--workers", type=int, default=2, help="DataLoader num_workers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads of the main process")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--out", default="naive_model.pt", help="where the trained weights go")
    p.add_argument("--override", action="append", default=[],
                   help="a `facecls train` config override for the model/split (repeatable), e.g. model.fc=[64]")
    return p.parse_args(argv)


def transform(prep, aug: str) -> T.Compose:
    """Resize (+ the report's per-sample augmentation) + ToTensor + Normalize."""
    steps = [T.Resize((prep.size, prep.size))] if prep.resize is None else [T.Resize(prep.resize),
                                                                           T.CenterCrop(prep.size)]
    if aug == "basic":
        steps += [T.RandomHorizontalFlip(0.5),
                  T.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05)),
                  T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(prep.mean, prep.std)])


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from facecls.config.compose import compose
    from facecls.data.split import assign_splits
    from facecls.models import build_model, preprocess_for

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    # the model and split settings `facecls train data=imagefolder` would use
    cfg = compose("train", [f"model={args.model}", "data=imagefolder", f"data.root={args.root}",
                            f"model.input_size={args.input_size}", *args.override])
    prep = preprocess_for(cfg.model)
    train_set = ImageFolder(args.root, transform=transform(prep, args.aug))
    eval_set = ImageFolder(args.root, transform=transform(prep, "none"))
    files = [os.path.relpath(path, args.root).replace(os.sep, "/") for path, _ in train_set.samples]
    s = cfg.data.split
    which = assign_splits(files, s.train, s.val, s.test, seed=s.seed)
    if s.get("folds") is not None:  # data.split.folds=K: fold `fold` of the non-test images is val, as in facecls
        from facecls.data.split import assign_folds

        which = assign_folds(files, which, s.folds, s.get("fold", 0), seed=s.seed)
    index = {name: [i for i, w in enumerate(which) if w == name] for name in ("train", "val", "test")}
    train, val, test = Subset(train_set, index["train"]), Subset(eval_set, index["val"]), Subset(eval_set,
                                                                                                index["test"])
    torch.manual_seed(args.seed)
    net = build_model(cfg.model, num_classes=len(train_set.classes)).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.optim.lr)
    order = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(train, args.batch_size, shuffle=True, num_workers=args.workers, generator=order)
    val_loader = DataLoader(val, args.eval_batch_size, num_workers=args.workers)
    test_loader = DataLoader(test, args.eval_batch_size, num_workers=args.workers)
    setup_seconds = time.perf_counter() - STARTED

    clock, epochs = BatchClock(), []
    train_started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        total, correct, seen = 0.0, 0, 0
        for x, y in clock.wrap(train_loader, "train"):
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            logits = net(x)
            loss = nn.functional.cross_entropy(logits, y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)  # the report's loop logs every batch's loss
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        net.eval()
        val_correct = 0
        with torch.no_grad():
            for x, y in clock.wrap(val_loader, "val"):
                val_correct += (net(x.to(device)).argmax(1) == y.to(device)).sum().item()
        epochs.append({"epoch": epoch, "train_loss": total / seen, "train_acc": correct / seen,
                       "val_acc": val_correct / len(val), "seconds": time.perf_counter() - t0})
        print(f"epoch {epoch}/{args.epochs} train_loss {total / seen:.4f} val_acc {val_correct / len(val):.4f} "
              f"({epochs[-1]['seconds']:.2f} s)", flush=True)
    train_seconds = time.perf_counter() - train_started

    started = time.perf_counter()
    test_correct = 0
    with torch.no_grad():
        for x, y in test_loader:
            test_correct += (net(x.to(device)).argmax(1) == y.to(device)).sum().item()
    test_seconds = time.perf_counter() - started
    started = time.perf_counter()
    torch.save(net.state_dict(), args.out)
    save_seconds = time.perf_counter() - started
    result = {"setup_seconds": setup_seconds, "train_seconds": train_seconds, "test_seconds": test_seconds,
              "save_seconds": save_seconds, "epoch_seconds": [e["seconds"] for e in epochs], "history": epochs,
              "test_acc": test_correct / max(len(test), 1), "train_images": len(train), "val_images": len(val),
              "test_images": len(test), "workers": args.workers, "threads": torch.get_num_threads(),
              "device": str(device), "aug": args.aug, **boundary_stats(clock.passes),
              "inside_seconds": time.perf_counter() - STARTED}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

"""Data-parallel training on several processes: ``trainer.strategy=ddp`` under torchrun.

    torchrun --nproc_per_node=4 -m facecls train trainer.strategy=ddp          # 4 GPUs
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:29500 -m facecls train trainer.strategy=ddp  # 2 nodes

Every process holds the whole (decoded, in-memory) dataset and trains on its own share of
each global batch: the shuffled order is the same on every rank (same seed) and rank r
takes every world_size-th index from r, as torch's DistributedSampler does. So one step
of N processes with ``trainer.batch_size / N`` images each sees exactly the images of one
single-process step with ``trainer.batch_size``. DistributedDataParallel averages the
gradients; validation sums are all-reduced so every rank takes the same early-stopping
decision; only rank 0 writes the run dir. Backend: nccl on CUDA, gloo on CPU.

The single-process :data:`SINGLE` context makes every helper here a no-op, so the loop
reads the same with and without DDP.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import os
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from facecls.errors import UserError

log = logging.getLogger(__name__)

STRATEGIES = ("single", "ddp")
TORCHRUN_HINT = "torchrun --nproc_per_node=<processes> -m facecls train trainer.strategy=ddp …"


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the group (rank 0 of 1 without DDP)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs and writes files."""
        return self.rank == 0

    def any(self, flag) -> bool:
        """True on every rank when ``flag`` is true on any rank, so all ranks leave the
        loop at the same step (a rank alone in a collective would wait forever)."""
        if not self.active:
            return bool(flag)
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def sum(self, *values: float) -> list[float]:
        """Each value summed over all ranks (counts, loss sums)."""
        if not self.active:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.tolist()

    def adapt(self, settings):
        """The loop settings of this process: its rank, its share of the global batch
        (trainer.batch_size), progress bars on rank 0 only."""
        if settings.batch_size % self.world_size:
            raise UserError(f"trainer.batch_size={settings.batch_size} does not split over {self.world_size} "
                            f"processes — use a multiple of {self.world_size} (it is the global batch).")
        return dataclasses.replace(settings, dist=self, batch_size=settings.batch_size // self.world_size,
                                   progress=settings.progress if self.is_main else False)

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it renders/decodes and fills the disk caches), the
        other ranks then run it and read what rank 0 wrote."""
        if self.active and not self.is_main:
            dist.barrier()
        yield
        if self.active and self.is_main:
            dist.barrier()

    def wrap(self, net: nn.Module, seed: int) -> nn.Module:
        """DistributedDataParallel around ``net`` (it all-reduces the gradients in backward)."""
        if not self.active:
            return net

        # No collective inside a forward pass: evaluation shares may differ in length by one
        # batch. (torch >= 2.15 names the switch forward_sync_buffers.)
        no_sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
            DistributedDataParallel).parameters else "broadcast_buffers"
        wrapped = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                          **{no_sync: False})
        # The weights are equal on every rank now (DDP broadcast rank 0's); from here on each
        # rank draws its own dropout masks and augmentations.
        torch.manual_seed(seed + self.rank)
        return wrapped


SINGLE = DistContext()


def setup(strategy: str, device: torch.device) -> DistContext:
    """Join the torchrun process group for ``strategy='ddp'``; a no-op for 'single'."""
    if strategy == "single":
        return DistContext(device=device)
    if strategy != "ddp":
        raise UserError(f"unknown trainer.strategy '{strategy}' — use single, or ddp under torchrun.")
    if not dist.is_available():
        raise UserError("this PyTorch build has no torch.distributed — use trainer.strategy=single.")
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise UserError(f"trainer.strategy=ddp needs the processes torchrun starts — launch with: {TORCHRUN_HINT}")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible) — "
                            "use --nproc_per_node=<number of GPUs>.")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if rank != 0:
        logging.getLogger().setLevel(logging.ERROR)  # one copy of the log: rank 0's
    log.info("DDP: %d processes, backend %s, %s per process", world_size, dist.get_backend(), device)
    return DistContext(rank=rank, world_size=world_size, device=device)


@contextlib.contextmanager
def session(strategy: str, device: torch.device) -> Iterator[DistContext]:
    """:func:`setup`, and leave the process group at the end (also after an error)."""
    ctx = setup(strategy, device)
    try:
        yield ctx
    finally:
        if strategy == "ddp" and dist.is_initialized():
            dist.destroy_process_group()

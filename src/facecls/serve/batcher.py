"""Dynamic batching: concurrent requests share forward passes.

A request's images wait in a queue; one worker takes the first waiting request, then keeps
collecting for at most ``max_wait_ms`` (or until ``max_batch`` images) and runs them through
the model in one call on its own thread, so the event loop keeps accepting requests meanwhile.
While one batch runs the next fills up, so under load batches grow by themselves and the wait
is rarely paid. A model call costs a fixed overhead plus a per-image part, and on a CPU the
per-image part of a batch is cheaper than of single images (better cache use, fewer dispatches):
throughput grows with concurrency instead of each request queueing for the cores alone.

``Direct`` is the unbatched baseline: each request runs its own forward pass in a thread pool.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from facecls.inference.runners import Runner


@dataclass
class Scored:
    outputs: torch.Tensor   # this request's rows
    batch_images: int       # images in the forward pass it shared
    model_ms: float         # that forward pass's time


class Batcher:
    """Collects requests into batches of up to ``max_batch`` images, waiting ``max_wait_ms`` at most."""

    def __init__(self, runner: Runner, max_batch: int, max_wait_ms: float):
        self.runner = runner
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facecls-model")
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._work())

    async def stop(self) -> None:
        """After the server stopped taking requests: the queue is empty, the worker can go."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def score(self, images: torch.Tensor) -> Scored:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, future))
        return await future

    async def _collect(self) -> list:
        items = [await self.queue.get()]
        count = len(items[0][0])
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch:
            if not self.queue.empty():
                item = self.queue.get_nowait()
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    break
            items.append(item)
            count += len(item[0])
        return items

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            batch = torch.cat([images for images, _ in items])
            start = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self.executor, self.runner, batch)
            except Exception as err:  # a failed forward pass fails its requests, never the worker
                for _, future in items:
                    if not future.done():
                        future.set_exception(err)
                continue
            model_ms = (time.perf_counter() - start) * 1000
            row = 0
            for images, future in items:
                if not future.done():  # (a client that went away cancelled its future)
                    future.set_result(Scored(outputs[row:row + len(images)], len(batch), model_ms))
                row += len(images)


class Direct:
    """No batching: every request's forward pass runs on its own pool thread."""

    def __init__(self, runner: Runner, workers: int):
        self.runner = runner
        self.executor = ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="facecls-model")

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.executor.shutdown(wait=True)

    async def score(self, images: torch.Tensor) -> Scored:
        start = time.perf_counter()
        outputs = await asyncio.get_running_loop().run_in_executor(self.executor, self.runner, images)
        return Scored(outputs, len(images), (time.perf_counter() - start) * 1000)

"""The one micro-batcher for local generation: requests that arrive close together run as one batched call.

``model.serve`` (each HTTP request) and ``data.simulators.LocalSimulator`` (each waiting session's next
question) submit items here. A worker task takes the first waiting item and everything that arrives
within ``wait_s`` (up to ``max_batch``), groups the items by ``group_key`` (items whose sampling settings
differ cannot share a generate call; a key unique to an item, such as a seeded request's, keeps it alone)
and runs each group through ``run_batch`` in a worker thread, so the event loop stays free meanwhile.
``run_batch`` returns one result per item, or an exception for an item, raised in its submitter; an
exception it raises itself reaches every item of the group. ``requests`` and ``batches`` count how well
the batching works.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Generic, Hashable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _one_group(item) -> None:
    return None


class MicroBatcher(Generic[T, R]):
    def __init__(self, run_batch: Callable[[list[T]], Sequence[R | BaseException]], *, wait_s: float = 0.005,
                 max_batch: int | None = None, group_key: Callable[[T], Hashable] = _one_group):
        self.run_batch, self.wait_s, self.max_batch, self.group_key = run_batch, wait_s, max_batch, group_key
        self.requests = self.batches = 0
        self._queue: asyncio.Queue[tuple[T, asyncio.Future]] = asyncio.Queue()
        self._worker: asyncio.Task | None = None

    async def submit(self, item: T) -> R:
        """The item's result, once its batch has run (the worker starts with the first item)."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._loop(), name="micro-batcher")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _gather(self) -> list[tuple[T, asyncio.Future]]:
        """The first waiting item and those that join it within ``wait_s`` (at most ``max_batch``)."""
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.wait_s
        while self.max_batch is None or len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        while True:
            groups: dict[Hashable, list[tuple[T, asyncio.Future]]] = {}
            for item, future in await self._gather():
                groups.setdefault(self.group_key(item), []).append((item, future))
            for group in groups.values():
                await self._run(group)

    async def _run(self, group: list[tuple[T, asyncio.Future]]) -> None:
        self.requests, self.batches = self.requests + len(group), self.batches + 1
        try:
            results = await asyncio.to_thread(self.run_batch, [item for item, _ in group])
        except Exception as err:  # noqa: BLE001 - handed to every waiting submitter
            results = [err] * len(group)
        for (_, future), result in zip(group, results):
            if future.done():  # the submitter went away (a client disconnected, a session was cancelled)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

"""Micro-batching: concurrent requests are grouped into one inference call.

A request submits its item and awaits its result. One collector task takes the waiting
items as a batch (at most ``max_batch``) and runs ``run(items)`` in a single worker
thread, so the event loop keeps accepting requests while the model runs. Before running,
the collector waits at most ``max_wait_ms`` for more items, and only while requests are
known to be on their way (their body is still being read: :meth:`Batcher.incoming`), so a
lone client never pays the wait. Items that arrive while a batch runs form the next one.

``run`` returns one result per item, in order. If it raises for a batch of several
items, each item is run alone, so one bad item cannot fail the others.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

from .._errors import InferenceError

__all__ = ["BatchInfo", "Batcher"]


@dataclass(frozen=True)
class BatchInfo:
    """How an item was run: the size of its batch and times (``time.perf_counter``)."""

    size: int
    submitted: float
    started: float
    ended: float

    @property
    def queue_ms(self) -> float:
        return (self.started - self.submitted) * 1000.0

    @property
    def inference_ms(self) -> float:
        return (self.ended - self.started) * 1000.0


@dataclass
class _Job:
    item: Any
    future: asyncio.Future
    submitted: float


class Batcher:
    """Group concurrent :meth:`submit` calls into calls of ``run(items) -> results``.

    ``on_batch(size, seconds)`` is called (in the worker thread) after each run.
    Create and use it inside one running event loop; :meth:`start` before the first
    :meth:`submit`, :meth:`stop` at shutdown.
    """

    def __init__(
        self,
        run: Callable[[Sequence[Any]], Sequence[Any]],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if not 0 <= max_wait_ms <= 1000:
            raise ValueError(f"max_wait_ms must be between 0 and 1000, got {max_wait_ms}")
        self._run = run
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._on_batch = on_batch
        self._pending: collections.deque[_Job] = collections.deque()
        self._coming = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def queued(self) -> int:
        """Items waiting for a batch."""
        return len(self._pending)

    def start(self) -> None:
        if self._task is not None:
            return
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fruitlens-inference")
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the collector; items still waiting fail with :class:`InferenceError`."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        _fail(list(self._pending), InferenceError("the server is shutting down"))
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @contextmanager
    def incoming(self) -> Iterator[None]:
        """Around the reading of a request that will :meth:`submit`: the collector waits
        (up to ``max_wait_ms``) for it rather than running a batch without it."""
        self._coming += 1
        try:
            yield
        finally:
            self._coming -= 1
            if self._wakeup is not None:
                self._wakeup.set()

    async def submit(self, item: Any) -> tuple[Any, BatchInfo]:
        """Run ``item`` in the next batch: ``(its result, how it ran)``."""
        if self._task is None or self._wakeup is None:
            raise InferenceError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Job(item, future, time.perf_counter()))
        self._wakeup.set()
        return await future

    async def _collect(self) -> list[_Job]:
        assert self._wakeup is not None
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = time.perf_counter() + self.max_wait
        while len(self._pending) < self.max_batch and self._coming > 0:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                break
        n = min(self.max_batch, len(self._pending))
        return [self._pending.popleft() for _ in range(n)]

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            jobs = [j for j in jobs if not j.future.done()]  # cancelled by their client
            if not jobs:
                continue
            try:
                started = time.perf_counter()
                results = await loop.run_in_executor(
                    self._executor, self._run_isolated, [j.item for j in jobs]
                )
                ended = time.perf_counter()
            except asyncio.CancelledError:
                _fail(jobs, InferenceError("the server is shutting down"))
                raise
            except Exception as exc:  # a bug of run(): its jobs fail, the loop goes on
                _fail(jobs, exc)
                continue
            for job, result in zip(jobs, results):
                if job.future.done():
                    continue
                if isinstance(result, _Failed):
                    job.future.set_exception(result.error)
                else:
                    job.future.set_result(
                        (result, BatchInfo(len(jobs), job.submitted, started, ended))
                    )

    def _run_isolated(self, items: list[Any]) -> list[Any]:
        """``run(items)``; if that raises, each item alone, so that only the items whose
        run raises fail (with that exception)."""
        start = time.perf_counter()
        try:
            results = list(self._run(items))
            if len(results) != len(items):
                raise InferenceError(f"{len(results)} results for {len(items)} items")
        except Exception as exc:
            if len(items) == 1:
                return [_Failed(exc)]
            return [self._run_isolated([item])[0] for item in items]
        if self._on_batch is not None:
            self._on_batch(len(items), time.perf_counter() - start)
        return results


@dataclass(frozen=True)
class _Failed:
    """The result of an item whose run raised."""

    error: Exception


def _fail(jobs: list[_Job], exc: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)

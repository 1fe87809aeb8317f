"""Server-sent event streams: capped in number, one poller per saga however many follow it.

A stream used to poll the store on its own, through the thread pool that every request shares:
a few dozen streams and the starts waited for threads. Now:

- at most ``events_max_streams`` streams are open at once, and ``events_max_streams_per_key``
  per API key; past either, a 429 problem before the stream starts;
- one poller per saga looks at the store every ``events_poll_seconds`` and hands each change to
  every stream that follows the saga;
- pollers read the store on the hub's own two threads, never the shared pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from engine import SagaError

logger = logging.getLogger("api")

#: Threads the pollers read the store on: streams wait for each other, not for requests.
POLL_THREADS = 2


class TooManyStreams(SagaError):
    http_status = 429
    code = "too_many_streams"


@dataclass(frozen=True)
class Look:
    """What a poller saw: the saga resource, a token that changes when it does, final or not."""

    saga: Any
    seen: Any
    final: bool


@dataclass
class _Watch:
    """One saga's poller and what it last saw."""

    followers: int = 0
    version: int = 0
    latest: Look | None = None
    ended: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def publish(self, look: Look | None) -> None:
        if look is None or look.final:
            self.ended = True
        if look is not None:
            self.latest = look
            self.version += 1
        # Wake every follower at once: each waits on the event of its moment.
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class StreamHub:
    """The API's open streams and the pollers behind them.

    ``look(saga_id)`` reads the saga (blocking: it runs on the hub's threads); None when the
    store no longer holds it.
    """

    def __init__(
        self,
        look: Callable[[str], Look | None],
        *,
        poll_seconds: float,
        max_seconds: float,
        max_streams: int,
        max_per_key: int,
    ) -> None:
        self._look = look
        self.poll_seconds = poll_seconds
        self.max_seconds = max_seconds
        self.max_streams = max_streams
        self.max_per_key = max_per_key
        self._per_key: Counter[str] = Counter()
        self._watches: dict[str, _Watch] = {}
        self._executor: ThreadPoolExecutor | None = None
        #: Store reads made by pollers (for tests and the curious).
        self.looks = 0

    @property
    def streams(self) -> int:
        return sum(self._per_key.values())

    @property
    def pollers(self) -> int:
        return sum(1 for w in self._watches.values() if w.task is not None and not w.task.done())

    @contextlib.contextmanager
    def admit(self, key: str) -> Iterator[None]:
        """Hold one stream's place for ``key``; TooManyStreams (429) when none is left."""
        if self.streams >= self.max_streams:
            raise TooManyStreams("too many event streams are open; try again later")
        if self._per_key[key] >= self.max_per_key:
            raise TooManyStreams(f"this API key has {self.max_per_key} event streams open already")
        self._per_key[key] += 1
        try:
            yield
        finally:
            self._per_key[key] -= 1
            if not self._per_key[key]:
                del self._per_key[key]

    async def follow(self, saga_id: str) -> AsyncGenerator[Any, None]:
        """The saga each time it changes, until it ends or the stream has lasted its longest."""
        watch = self._watches.get(saga_id)
        if watch is None or watch.ended:
            watch = self._watches[saga_id] = _Watch()
            watch.task = asyncio.create_task(self._poll(saga_id, watch))
        watch.followers += 1
        seen = 0
        loop = asyncio.get_running_loop()
        ends = loop.time() + self.max_seconds
        try:
            while True:
                changed = watch.changed
                if watch.version > seen and watch.latest is not None:
                    seen = watch.version
                    yield watch.latest.saga
                if watch.ended or loop.time() >= ends:
                    return
                # The bound covers the wait only: a timeout around a yield would cancel the
                # consumer of this generator wherever it happened to be.
                try:
                    async with asyncio.timeout(ends - loop.time()):
                        await changed.wait()
                except TimeoutError:
                    return
        finally:
            watch.followers -= 1
            if not watch.followers and watch.task is not None:
                watch.task.cancel()
                if self._watches.get(saga_id) is watch:
                    del self._watches[saga_id]

    async def wait(self, saga_id: str, seconds: float, settled: Callable[[Any], bool]) -> Any:
        """The saga once ``settled(saga)``, or as last seen after ``seconds`` (None: unseen).

        A waiting request follows the saga like a stream, so every waiter and stream of one
        saga shares its one poller: a waiter costs a coroutine, not a store read per poll.
        """
        latest = None
        try:
            async with asyncio.timeout(seconds):
                async with contextlib.aclosing(self.follow(saga_id)) as changes:
                    async for saga in changes:
                        latest = saga
                        if settled(saga):
                            break
        except TimeoutError:
            pass
        return latest

    async def _poll(self, saga_id: str, watch: _Watch) -> None:
        loop = asyncio.get_running_loop()
        last = None
        try:
            while not watch.ended:
                look = await loop.run_in_executor(self._threads(), self._look, saga_id)
                self.looks += 1
                if look is None or look.seen != last:
                    last = look.seen if look is not None else None
                    watch.publish(look)
                if not watch.ended:
                    await asyncio.sleep(self.poll_seconds)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("event stream of saga %s stopped", saga_id)
            watch.publish(None)

    def _threads(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(POLL_THREADS, thread_name_prefix="sse-poll")
        return self._executor

    def close(self) -> None:
        for watch in self._watches.values():
            if watch.task is not None:
                watch.task.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

"""The raft-like index and the wake-up hub behind blocking queries.

Every write takes the next global index once and stamps the tables/resources it touched with
it; reads report the index of exactly what they cover. Blocking readers register a predicate
over change *topics* ("kv:<key>", "svc:<name>", "table:services", ...) and are woken only by
writes whose topics match, then re-check their own index: unrelated writes never wake them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable

Predicate = Callable[[str], bool]

#: first index handed out; Consul's index is never 0 and clients treat 0 as "no blocking"
START_INDEX = 10


class Hub:
    """Futures of blocked readers, each with a predicate over change topics."""

    def __init__(self) -> None:
        self._waiters: list[tuple[Predicate, asyncio.Future[float]]] = []
        #: seconds from a write's commit to its blocked readers running again (last 10000)
        self.wake_samples: deque[float] = deque(maxlen=10000)

    def notify(self, topics: Iterable[str]) -> None:
        topics = list(topics)
        if not topics or not self._waiters:
            return
        keep: list[tuple[Predicate, asyncio.Future[float]]] = []
        now = time.monotonic()
        for pred, fut in self._waiters:
            if fut.done():
                continue
            if any(pred(t) for t in topics):
                fut.set_result(now)
            else:
                keep.append((pred, fut))
        self._waiters = keep

    async def wait(self, pred: Predicate, timeout: float) -> bool:
        """Wait until a matching topic is notified (True) or ``timeout`` passes (False)."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        try:
            notified_at = await asyncio.wait_for(fut, timeout)
            self.wake_samples.append(time.monotonic() - notified_at)
            return True
        except TimeoutError:
            return False
        finally:
            if not fut.done():
                fut.cancel()
            self._waiters = [w for w in self._waiters if w[1] is not fut]

    @property
    def waiting(self) -> int:
        return len(self._waiters)


class Store:
    """The global index, per-table indexes and pending change topics of the current write."""

    def __init__(self) -> None:
        self.index = START_INDEX
        self.tables: dict[str, int] = {}
        self.hub = Hub()
        self._pending: set[str] = set()
        self._current: int | None = None
        self.on_commit: list[Callable[[], None]] = []

    def write(self) -> int:
        """The index of the write in progress (allocated once per write)."""
        if self._current is None:
            self.index += 1
            self._current = self.index
        return self._current

    def touch(self, *topics: str) -> int:
        """Record that this write changed ``topics``; table topics also stamp the table."""
        idx = self.write()
        for t in topics:
            if t.startswith("table:"):
                self.tables[t[6:]] = idx
            self._pending.add(t)
        return idx

    def commit(self) -> None:
        """End the write: wake matching blocked readers and run persistence hooks."""
        if self._current is None:
            return
        topics, self._pending, self._current = self._pending, set(), None
        self.hub.notify(topics)
        for hook in self.on_commit:
            hook()

    def table(self, *names: str) -> int:
        return max([self.tables.get(n, 0) for n in names] + [1])

"""The one blocking-query poller: Consul's index rules, a spin guard and one backoff.

A blocking query (``?index=N&wait=30s``) parks in Consul until something under it changes
past index N. The rules every loop must get right, kept here once (Consul's "Blocking
Queries" documentation):

- the next query waits on the ``X-Consul-Index`` of the last answer; an index that goes
  backwards (a catalog restored or restarted) resets to 0, and index 0 never blocks;
- an agent that answers a blocking query at once with the same index must not make us
  spin: pause briefly; one that sends no index at all cannot block: poll at ``interval``;
- a failed query backs off (``aio.Backoff``) and the next one is a plain read, so the
  caller sees the current state as soon as Consul answers again;
- a long poll parked on a connection that died silently is abandoned as soon as any other
  call finds Consul unreachable (`ConsulClient.on_unreachable`).

``reset()`` forgets the index at once and cuts a parked poll short: registration calls it
(through `ConsulClient.reset_queries`) when the catalog lost our service, because a catalog
that lost its state may answer old indexes as if nothing had happened.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from autopilot.aio import Backoff
from autopilot.discovery.http import ConsulRefused, Params, Response, blocking
from autopilot.durations import to_go

if TYPE_CHECKING:
    from autopilot.discovery.client import ConsulClient

SPIN_PAUSE = 0.1  # the agent answered a blocking query at once with the same index
SPIN_WINDOW = 0.05  # "at once"
NO_INDEX_PAUSE = 5.0  # no X-Consul-Index and no interval given: poll this often


class Abandoned(ConnectionError):
    """The long poll was cut short: Consul found unreachable by another call."""


class BlockingQuery:
    """``await poll()`` returns the next answer to ``GET path?params``: at once the first
    time (and after a failure or a reset), then each time the result may have changed."""

    def __init__(self, client: ConsulClient, path: str, params: Params = (), *,
                 wait: float = 30.0, timeout: float = 5.0, retry: Backoff | None = None,
                 block: bool = True, interval: float = 0.0,
                 accept: tuple[int, ...] = (200, 404)) -> None:
        self.client = client
        self.path = path
        self.params = list(params)
        self.wait = wait
        self.timeout = timeout
        self.retry = retry or Backoff(0.25, 5.0)
        self.block = block  # False: every poll is a plain read (the caller paces them)
        self.interval = interval
        self.accept = accept  # other status codes are failures (ConsulRefused)
        self.index = 0
        self.failures = 0  # failed polls in a row
        self._pause = 0.0  # owed before the next poll (spin guard, agent without index)
        self._cut = asyncio.Event()
        self._reset = False
        self._unlisten = client.on_unreachable(self._cut.set)
        client.track(self)

    def reset(self) -> None:
        """Forget the index: the next poll reads at once; a parked poll returns early."""
        self.index = 0
        self._reset = True
        self._cut.set()

    def close(self) -> None:
        self._unlisten()
        self.client.untrack(self)

    async def poll(self) -> Response:
        """The next answer. Raises what the request raised (the caller decides how loudly
        to say so); the next poll then first waits the backoff."""
        while True:
            if self.failures:
                await asyncio.sleep(self.retry.delay(self.failures))
            elif self._pause:
                await asyncio.sleep(self._pause)
            self._pause = 0.0
            self._reset = False
            index = self.index if self.block and not self.failures else 0
            started = time.monotonic()
            try:
                resp = await self._fetch(index)
            except Abandoned:
                if self._reset:
                    continue  # reset(): read again at once, no failure
                self.failures += 1
                raise
            except Exception:
                self.failures += 1
                raise
            if resp.code not in self.accept:
                self.failures += 1
                raise ConsulRefused(f"GET {self.path}", resp.code, resp.body)
            self.failures = 0
            if index and resp.index == index and time.monotonic() - started < SPIN_WINDOW:
                self._pause = SPIN_PAUSE  # the agent did not block: do not spin
            if self.block and resp.index == 0:
                self._pause = self.interval or NO_INDEX_PAUSE  # this agent cannot block
            # Consul's rules: an index that goes backwards resets; never block on index 0
            self.index = 0 if resp.index < self.index else max(resp.index, 1)
            return resp

    async def _fetch(self, index: int) -> Response:
        params = self.params + blocking(index, to_go(self.wait))
        if not index:
            return await self._request(params, self.timeout)
        # Consul may add up to wait/16 to the wait
        timeout = self.wait + self.wait / 16 + self.timeout
        self._cut.clear()
        query = asyncio.ensure_future(self._request(params, timeout))
        cut = asyncio.ensure_future(self._cut.wait())
        try:
            await asyncio.wait({query, cut}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut.cancel()
            if not query.done():
                query.cancel()
        if query.done() and not query.cancelled():
            return query.result()
        raise Abandoned("consul unreachable; long poll abandoned")

    async def _request(self, params: Params, timeout: float) -> Response:
        return await self.client.request("GET", self.path, params=params, timeout=timeout)

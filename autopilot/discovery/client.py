"""An asyncio face on py-consul: every call runs in a worker thread with a deadline.

py-consul is synchronous (requests). A Consul call must never hold up the event loop, so
``run`` sends it to a thread and gives up waiting after ``timeout``. Each worker thread has
its own ``consul.Consul`` (requests sessions are not shared across threads); blocking queries
simply pass ``index=`` and ``wait=`` and a timeout a little longer than the wait.

Two pools: calls with a long ``timeout`` (blocking queries) get their own threads, so any
number of watches parked in long polls can never starve a registration's heartbeat. Worker
threads are daemons: a long poll still waiting at shutdown must not keep the process alive.

The client also tracks whether Consul is reachable and logs only the changes ("consul
unreachable" once, "consul reachable again" once), not every failed retry.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any, TypeVar

from autopilot import lazyssl
from autopilot.config.model import ConsulConfig
from autopilot.discovery.connection import build_client, resolve, split_address
from autopilot.discovery.http import Params, Response
from autopilot.discovery.transport import Transport
from autopilot.logs import get_logger

if TYPE_CHECKING:
    import consul

T = TypeVar("T")
log = get_logger("autopilot.discovery")

#: a call whose timeout exceeds this is treated as a long poll and runs in the long-poll pool
LONG_CALL = 10.0


class DaemonPool(Executor):
    """A thread pool of daemon threads that grows on demand up to ``max_workers``."""

    def __init__(self, max_workers: int, name: str) -> None:
        self._max = max_workers
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Future, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for work (a thread being started counts as idle)
        self._waiting = 0  # queued items no thread has taken yet
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        fut: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("pool is closed")
            self._queue.put((fut, lambda: fn(*args, **kwargs)))
            self._waiting += 1
            if self._waiting > self._idle and len(self._threads) < self._max:
                t = threading.Thread(target=self._work, daemon=True,
                                     name=f"{self._name}-{len(self._threads)}")
                self._threads.append(t)
                self._idle += 1
                t.start()
        return fut

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            with self._lock:
                self._idle -= 1
                if item is not None:
                    self._waiting -= 1
            if item is None:
                return
            fut, fn = item
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
                    fut.set_exception(exc)
            del item, fut, fn
            with self._lock:
                self._idle += 1

    @property
    def threads(self) -> list[threading.Thread]:
        """The worker threads started so far (never more than ``max_workers``)."""
        with self._lock:
            return list(self._threads)

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = True) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._queue.put(None)
        if wait:
            for t in threads:
                t.join()


def is_unreachable(exc: BaseException) -> bool:
    """True for errors that mean "no answer from Consul" rather than "Consul said no"."""
    if isinstance(exc, (TimeoutError, asyncio.IncompleteReadError, OSError)):
        return True  # ConnectionError and ssl.SSLError are OSErrors
    # requests is loaded only with the py-consul path (``run``); its errors count there
    requests = sys.modules.get("requests")
    return requests is not None and isinstance(exc, (requests.ConnectionError,
                                                     requests.Timeout))


class ConsulClient:
    def __init__(self, cfg: ConsulConfig, max_workers: int = 16,
                 max_long_polls: int = 256) -> None:
        """``cfg`` is used as given; ``autopilot.discovery.connect`` applies the environment."""
        self.cfg = cfg
        self._local = threading.local()
        self._pool = DaemonPool(max_workers, "consul")
        self._long_pool = DaemonPool(max_long_polls, "consul-poll")
        self.reachable = True
        #: bumped each time Consul answers again after being unreachable
        self.reconnects = 0
        self._reconnect_listeners: list[Callable[[], None]] = []
        self._lost_listeners: list[Callable[[], None]] = []
        self._wiped_listeners: list[Callable[[], None]] = []
        #: requests on the event loop (http.request): keep-alive connections, no threads
        self._transport: Transport | None = None
        self._transport_loop: asyncio.AbstractEventLoop | None = None
        #: the live blocking queries (discovery.poll.BlockingQuery), for reset_queries()
        self._queries: weakref.WeakSet[Any] = weakref.WeakSet()

    def _client(self) -> consul.Consul:
        c = getattr(self._local, "client", None)
        if c is None:
            c = self.new_client()
            self._local.client = c
        return c

    def new_client(self) -> consul.Consul:
        """A fresh synchronous py-consul client for this connection's settings."""
        return build_client(self.cfg)

    @property
    def address(self) -> str:
        return f"{self.cfg.scheme}://{self.cfg.address}"

    def on_reconnect(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call ``fn`` (on the loop) whenever Consul answers again after an outage.

        Returns a function that removes the listener."""
        return self._listen(self._reconnect_listeners, fn)

    def on_unreachable(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call ``fn`` (on the loop) when a call first finds Consul unreachable, e.g. so a
        watch parked in a long poll on a dead connection can fall back to polling at once."""
        return self._listen(self._lost_listeners, fn)

    def on_catalog_lost(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call ``fn`` (on the loop) when a registration finds that Consul lost our service
        (it was wiped or replaced): blocking queries then start over from index 0 instead
        of waiting out an index the new catalog has not reached."""
        return self._listen(self._wiped_listeners, fn)

    def catalog_lost(self) -> None:
        """Called by the registration that found its service gone from Consul: every
        blocking query starts over (reset_queries), then the listeners are told."""
        self.reset_queries()
        self._tell(self._wiped_listeners)

    def track(self, query: Any) -> None:
        self._queries.add(query)

    def untrack(self, query: Any) -> None:
        self._queries.discard(query)

    def reset_queries(self) -> None:
        """Every blocking query forgets its index and reads again at once: the catalog lost
        our service, so it may have lost the state those indexes count."""
        for query in list(self._queries):
            query.reset()

    @staticmethod
    def _listen(listeners: list[Callable[[], None]],
                fn: Callable[[], None]) -> Callable[[], None]:
        listeners.append(fn)

        def remove() -> None:
            if fn in listeners:
                listeners.remove(fn)

        return remove

    @staticmethod
    def _tell(listeners: list[Callable[[], None]]) -> None:
        for fn in list(listeners):
            try:
                fn()
            except Exception:  # noqa: BLE001 - a listener must not break the caller
                log.exception("consul state listener failed")

    def _note(self, ok: bool, exc: BaseException | None = None) -> None:
        if ok and not self.reachable:
            self.reachable = True
            self.reconnects += 1
            log.info("consul reachable again", consul=self.address)
            self._tell(self._reconnect_listeners)
        elif not ok and self.reachable:
            self.reachable = False
            log.warning("consul unreachable", consul=self.address,
                        error=str(exc) or type(exc).__name__)
            self._tell(self._lost_listeners)

    async def run(self, fn: Callable[[consul.Consul], T], *, timeout: float = 5.0) -> T:
        """Run ``fn(client)`` in a worker thread; raise TimeoutError after ``timeout``."""
        loop = asyncio.get_running_loop()
        pool = self._long_pool if timeout > LONG_CALL else self._pool
        fut = loop.run_in_executor(pool, lambda: fn(self._client()))
        return await self._noted(_within(fut, timeout))

    async def request(self, method: str, path: str, *, params: Params = (), body: Any = None,
                      timeout: float = 5.0) -> Response:
        """One HTTP request on the loop (see `discovery.transport`); reachability noted as
        for ``run``. Use `discovery.http.request`."""
        loop = asyncio.get_running_loop()
        if self._transport is None or self._transport_loop is not loop:
            if self._transport is not None:
                self._transport.close()
            self._transport, self._transport_loop = Transport(self.cfg), loop
        return await self._noted(self._transport.request(method, path, params=params,
                                                         body=body, timeout=timeout))

    async def _noted(self, call: Awaitable[T]) -> T:
        """Await ``call`` and note what it tells of Consul's reachability: an answer, that
        it is reachable; an error, what ``is_unreachable`` makes of it. A cancellation
        tells nothing."""
        try:
            result = await call
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._note(not is_unreachable(exc), exc)
            raise
        self._note(True)
        return result

    def send_nowait(self, method: str, path: str, body: Any, timeout: float,
                    done: Callable[[Response | None, BaseException | None], None],
                    loop: asyncio.AbstractEventLoop | None = None) -> bool:
        """Send on a kept idle connection and return at once; ``done(response, error)``
        is called on the loop with the answer. False (nothing sent) when no connection is
        idle. A success counts as Consul reachable; a failure is left to the caller (a
        kept connection the agent closed is not an outage: the caller retries through
        ``request``, which notes what it finds). ``loop``: the running loop, if the caller
        keeps it (asking for it costs a ``getpid`` system call on Python 3.11)."""
        if loop is None:
            loop = asyncio.get_running_loop()
        transport = self._transport
        if transport is None or self._transport_loop is not loop:
            return False

        def finished(resp: Response | None, exc: BaseException | None) -> None:
            if exc is None:
                self._note(True)
            done(resp, exc)

        return transport.send_nowait(method, path, body, timeout, finished, loop)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._long_pool.shutdown(wait=False, cancel_futures=True)

    def __getattr__(self, name: str) -> Any:  # pragma: no cover - guard against misuse
        raise AttributeError(f"ConsulClient has no {name!r}; use `await client.run(lambda c: ...)`")


async def _within(fut: Awaitable[T], timeout: float) -> T:
    """``fut``'s result; TimeoutError after ``timeout``. asyncio.timeout, not wait_for:
    3.11's wait_for swallows a cancellation that arrives just as the call completes, and
    the caller's task then never stops."""
    async with asyncio.timeout(timeout):
        return await fut


def connect(cfg: ConsulConfig | None,
            environ: Mapping[str, str] | None = None) -> ConsulClient | None:
    """The supervisor's entry point: a ``ConsulClient`` for ``cfg``, or None when discovery is off.

    Raises ``ConfigError`` for unusable env values (a bad ``CONSUL_HTTP_ADDR`` or boolean).
    """
    if cfg is None:
        return None
    resolved = resolve(cfg, environ)
    if (resolved.scheme or split_address(resolved.address)[0]) == "https":
        # before anything loads urllib3 (templates, py-consul), which binds ssl at import
        lazyssl.require()
    return ConsulClient(resolved)

"""An asyncio face on py-consul: every call runs in a worker thread with a deadline.

py-consul is synchronous (requests). A Consul call must never hold up the event loop, so
``run`` sends it to a thread and gives up waiting after ``timeout``. Each worker thread has
its own ``consul.Consul`` (requests sessions are not shared across threads); blocking queries
simply pass ``index=`` and ``wait=`` and a timeout a little longer than the wait.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import consul

from autopilot.config.model import ConsulConfig

T = TypeVar("T")


class ConsulClient:
    def __init__(self, cfg: ConsulConfig, max_workers: int = 32) -> None:
        self.cfg = cfg
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="consul")

    def _client(self) -> consul.Consul:
        c = getattr(self._local, "client", None)
        if c is None:
            c = self.new_client()
            self._local.client = c
        return c

    def new_client(self) -> consul.Consul:
        """A fresh synchronous py-consul client for this connection's settings."""
        host, _, port = self.cfg.address.rpartition(":")
        tls = self.cfg.tls
        verify: bool | str = tls.verify
        if tls.verify and (tls.cafile or tls.capath):
            verify = tls.cafile or tls.capath  # type: ignore[assignment]
        cert = (tls.clientcert, tls.clientkey) if tls.clientcert and tls.clientkey else None
        return consul.Consul(
            host=host or "127.0.0.1",
            port=int(port or 8500),
            scheme=self.cfg.scheme,
            token=self.cfg.token,
            verify=verify,
            cert=cert,
        )

    async def run(self, fn: Callable[[consul.Consul], T], *, timeout: float = 5.0) -> T:
        """Run ``fn(client)`` in a worker thread; raise TimeoutError after ``timeout``."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, lambda: fn(self._client()))
        return await asyncio.wait_for(fut, timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __getattr__(self, name: str) -> Any:  # pragma: no cover - guard against misuse
        raise AttributeError(f"ConsulClient has no {name!r}; use `await client.run(lambda c: ...)`")

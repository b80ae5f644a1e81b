"""Test helpers: deadlines instead of sleeps, free ports, a real catalog process.

Import as ``from tests.helpers import wait_for, free_port, CatalogProcess, autopilot_cmd``.

Waiting, never sleeping before an assert: a test waits for a condition with a deadline
(``until`` in async tests, ``wait_for`` in blocking ones), and checks that something does
*not* happen by watching it for a while (``stays`` / ``holds``): on a slow machine a fixed
sleep passes when it should fail.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autopilot.catalog.local import LocalCatalog, free_port  # noqa: F401 - re-exported

ROOT = Path(__file__).resolve().parent.parent


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> Any:
    """Poll ``cond`` until it returns a truthy value; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


def holds(cond: Callable[[], Any], for_: float, interval: float = 0.02,
          message: str = "condition") -> None:
    """``cond`` stays truthy for ``for_`` seconds; fail the test as soon as it is not."""
    deadline = time.monotonic() + for_
    while True:
        if not cond():
            raise AssertionError(f"{message} stopped holding before {for_}s")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


async def until(cond: Callable[[], Any], timeout: float = 5.0, message: str = "condition", *,
                interval: float = 0.01, in_thread: bool = False) -> Any:
    """The async twin of ``wait_for``: poll ``cond`` without blocking the loop; its value
    once truthy. ``in_thread``: ``cond`` blocks (an HTTP request to something on this
    loop), so it runs in a worker thread while the loop keeps going."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = await asyncio.to_thread(cond) if in_thread else cond()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}"
                                 + (f" (last error: {last!r})" if last else ""))
        await asyncio.sleep(interval)


async def stays(cond: Callable[[], Any], for_: float, message: str = "condition", *,
                interval: float = 0.01, in_thread: bool = False) -> None:
    """The async twin of ``holds``: ``cond`` stays truthy for ``for_`` seconds (the loop
    keeps running meanwhile); fail as soon as it is not. ``in_thread`` as for ``until``."""
    deadline = time.monotonic() + for_
    while True:
        if not (await asyncio.to_thread(cond) if in_thread else cond()):
            raise AssertionError(f"{message} stopped holding before {for_}s")
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(interval)


class CatalogProcess(LocalCatalog):
    """`autopilot catalog` as a real subprocess on a loopback port, its log in ``tmp``."""

    def __init__(self, tmp: Path, *args: str, port: int | None = None) -> None:
        port = port or free_port()
        super().__init__(tmp / f"catalog-{port}.log", *args, port=port)

    def start(self, timeout: float = 15.0) -> CatalogProcess:
        super().start(timeout)
        return self


def autopilot_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "autopilot", *args]

"""In-process harness for the job tests: a real Supervisor on a real loop, real processes,
no other components (control, discovery … are left out)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from autopilot.config.model import Config, JobConfig
from autopilot.supervisor import Supervisor
from tests.helpers import until

__all__ = ["BareSupervisor", "Harness", "run", "until"]


class BareSupervisor(Supervisor):
    def _build_components(self) -> list[Any]:
        return []


def run(main: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(main(), timeout)
    return asyncio.run(guarded())


class Harness:
    """``async with Harness([JobConfig(...)]) as h: ...``; ``await h.stop()`` -> exit code."""

    def __init__(self, jobs: list[JobConfig], **config: Any) -> None:
        self.sup = BareSupervisor(Config(jobs=jobs, **config))
        self.task: asyncio.Task[int] | None = None

    async def __aenter__(self) -> Harness:
        self.task = asyncio.ensure_future(self.sup.run())
        await until(lambda: self.sup.started or self.task.done(), message="startup")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None and not self.task.done():
            self.sup.request_shutdown("test over")
            await asyncio.wait_for(asyncio.shield(self.task), 15)

    @property
    def bus(self) -> Any:
        return self.sup.ctx.bus

    def job(self, name: str) -> Any:
        return self.sup.jobs[name]

    def events(self, source: str | None = None) -> list[str]:
        return [str(e) for e in self.bus.history if source is None or e.source == source]

    def count(self, code: str, source: str) -> int:
        return sum(1 for e in self.bus.history if e.code == code and e.source == source)

    async def wait_event(self, code: str, source: str, count: int = 1,
                         timeout: float = 5.0) -> None:
        await until(lambda: self.count(code, source) >= count, timeout,
                    f"{count}x {code}:{source}; have {self.events()}")

    async def stop(self) -> int:
        assert self.task is not None
        self.sup.request_shutdown("test")
        return await asyncio.wait_for(asyncio.shield(self.task), 15)

    async def exited(self, timeout: float = 10.0) -> int:
        assert self.task is not None
        return await asyncio.wait_for(asyncio.shield(self.task), timeout)

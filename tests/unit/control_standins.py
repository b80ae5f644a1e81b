"""Stand-ins for the control and telemetry unit tests: a small test double of the
supervisor API (jobs, putenv, maintenance, metrics, reload) and a loop in a thread for the
real servers. The servers, sockets and clients under test are real."""

from __future__ import annotations

import asyncio
import signal as signal_mod
import threading
from dataclasses import dataclass, field
from typing import Any

from autopilot.config.model import (
    Config,
    ConfigError,
    ControlConfig,
    HealthConfig,
    JobConfig,
    MetricConfig,
    TelemetryConfig,
)
from autopilot.context import Context
from autopilot.events import EventBus
from autopilot.telemetry import Telemetry


@dataclass
class StandInJob:
    name: str
    cfg: JobConfig
    status: str = "unknown"
    pid: int | None = None
    runs: int = 0
    last_exit: int | None = None


@dataclass
class StandInSupervisor:
    """Implements the supervisor API the control server calls (docs/architecture.md)."""

    ctx: Context
    jobs: dict[str, StandInJob] = field(default_factory=dict)
    telemetry: Telemetry | None = None
    env: dict[str, str] = field(default_factory=dict)
    maintenance: bool = False
    shutting_down: bool = False
    components: list[Any] = field(default_factory=list)
    reload_error: str | None = None
    reloads: int = 0
    actions: list[tuple[str, str, Any]] = field(default_factory=list)

    def __hash__(self) -> int:
        return id(self)

    async def reload(self) -> None:
        await asyncio.sleep(0.01)
        if self.reload_error:
            raise ConfigError(self.reload_error)
        self.reloads += 1

    def putenv(self, env: dict[str, str]) -> None:
        self.env.update(env)

    def set_maintenance(self, enabled: bool) -> None:
        self.maintenance = enabled

    def put_metric(self, name: str, value: float) -> None:
        if self.telemetry is not None:
            self.telemetry.put_metric(name, value)

    def status(self) -> dict[str, Any]:
        return {"maintenance": self.maintenance, "jobs": [{"name": n, "extra": 1} for n in self.jobs]}

    async def job_action(self, name: str, action: str, signal: Any = None) -> None:
        job = self.jobs[name]
        if action == "signal":
            try:
                signal_mod.Signals[signal] if isinstance(signal, str) else signal_mod.Signals(signal)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"unknown signal {signal!r}") from exc
        self.actions.append((name, action, signal))
        job.status = "stopped" if action == "stop" else "healthy"


class LoopThread:
    """An asyncio loop in a thread, so the blocking client can run in the test thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def make_supervisor(sock: str, **control: Any) -> StandInSupervisor:
    config = Config(
        jobs=[JobConfig(name="web", exec=["sleep", "1"], port=80,
                        health=HealthConfig(exec=["true"], interval=1, ttl=5)),
              JobConfig(name="worker", exec=["sleep", "1"])],
        telemetry=TelemetryConfig(metrics=[
            MetricConfig(namespace="app", subsystem="s", name="tacos", type="counter"),
            MetricConfig(name="temp", type="gauge")]),
        control=ControlConfig(socket=sock, **control),
    )
    ctx = Context(config, EventBus())
    ctx.facts["web"] = {"registered": True, "service_id": "web-h", "address": "10.0.0.1",
                        "port": 80, "role": "primary"}
    sup = StandInSupervisor(ctx)
    for j in config.jobs:
        sup.jobs[j.name] = StandInJob(j.name, j, status="healthy", pid=1234)
    sup.telemetry = Telemetry(ctx, sup)
    return sup

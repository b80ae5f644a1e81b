"""The event bus: every component publishes here and every job listens here.

ContainerPilot's model, kept on purpose: one bus, every subscriber sees every event in
the same order. Events are plain values ``Event(code, source)``; ``detail`` carries a
human-readable note (a check's output, an error text) and takes no part in matching.

Everything runs on one asyncio loop. ``publish`` never blocks: each subscriber owns an
unbounded queue, so a slow subscriber can never hold up another one.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field

GLOBAL = "global"

# Event codes, spelled as they appear in configs (`when.once` / `when.each`).
STARTUP = "startup"
SHUTDOWN = "shutdown"
EXIT_SUCCESS = "exitSuccess"
EXIT_FAILED = "exitFailed"
STOPPING = "stopping"
STOPPED = "stopped"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
CHANGED = "changed"
TIMER_EXPIRED = "timerExpired"
ENTER_MAINTENANCE = "enterMaintenance"
EXIT_MAINTENANCE = "exitMaintenance"
ERROR = "error"
QUIT = "quit"
SIGNAL = "signal"  # source is the signal name: Event(SIGNAL, "SIGHUP")
METRIC = "metric"  # source is "name|value"
# autopilot additions (leader election)
ELECTED = "elected"
DEMOTED = "demoted"
LEADER_CHANGED = "leaderChanged"

#: codes a job may name in `when.once` / `when.each`
TRIGGER_CODES = frozenset(
    {
        STARTUP, SHUTDOWN, EXIT_SUCCESS, EXIT_FAILED, STOPPING, STOPPED, HEALTHY, UNHEALTHY,
        CHANGED, TIMER_EXPIRED, ENTER_MAINTENANCE, EXIT_MAINTENANCE, ERROR, QUIT,
        "SIGHUP", "SIGUSR2", ELECTED, DEMOTED, LEADER_CHANGED,
    }
)
#: signals that become bus events (`when: {source: "SIGHUP"}`)
SIGNAL_SOURCES = frozenset({"SIGHUP", "SIGUSR2"})

#: ContainerPilot's Go names, used as the `code` label of `containerpilot_events`
GO_NAMES = {
    STARTUP: "Startup", SHUTDOWN: "Shutdown", EXIT_SUCCESS: "ExitSuccess",
    EXIT_FAILED: "ExitFailed", STOPPING: "Stopping", STOPPED: "Stopped",
    HEALTHY: "StatusHealthy", UNHEALTHY: "StatusUnhealthy", CHANGED: "StatusChanged",
    TIMER_EXPIRED: "TimerExpired", ENTER_MAINTENANCE: "EnterMaintenance",
    EXIT_MAINTENANCE: "ExitMaintenance", ERROR: "Error", QUIT: "Quit", SIGNAL: "Signal",
    METRIC: "Metric", ELECTED: "Elected", DEMOTED: "Demoted", LEADER_CHANGED: "LeaderChanged",
}


@dataclass(frozen=True)
class Event:
    """One bus event: a code (the config spelling) from a source, with a detail."""

    code: str
    source: str
    detail: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.code}:{self.source}"


class Subscription:
    """One subscriber's ordered view of the bus."""

    def __init__(self, bus: EventBus, name: str,
                 accepts: Callable[[Event], bool] | None = None,
                 sources: frozenset[str] | None = None) -> None:
        self.bus = bus
        self.name = name
        #: a pure predicate: events it refuses are never queued (nor wake the subscriber)
        self.accepts = accepts
        #: the only sources it can want (checked before ``accepts``, without a Python call)
        self.sources = sources
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    async def get(self) -> Event:
        return await self.queue.get()

    def close(self) -> None:
        self.bus.unsubscribe(self)


class EventBus:
    """Broadcasts each event to every subscriber, in publication order."""

    def __init__(self, history: int = 1000) -> None:
        self._subs: list[Subscription] = []
        self._listeners: list[tuple[Callable[[Event], None], frozenset[str] | None]] = []
        self.history: collections.deque[Event] = collections.deque(maxlen=history)
        self._loop: asyncio.AbstractEventLoop | None = None

    def subscribe(self, name: str, accepts: Callable[[Event], bool] | None = None,
                  sources: frozenset[str] | None = None) -> Subscription:
        """``accepts``: only the events it returns True for are delivered (a subscriber that
        cares about a few sources is not woken for every health check of every job).
        ``sources``: events from any other source are dropped before ``accepts`` is even
        called (a set lookup per subscriber instead of a Python call: the bus carries two
        events per health check)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        sub = Subscription(self, name, accepts, sources)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def add_listener(self, fn: Callable[[Event], None],
                     sources: frozenset[str] | None = None) -> None:
        """Synchronous observers (metrics, logging, a registration's desired state); called
        inline, must not block. ``sources``: called only for events from these sources."""
        self._listeners = [*self._listeners, (fn, sources)]

    def remove_listener(self, fn: Callable[[Event], None]) -> None:
        self._listeners = [(f, s) for f, s in self._listeners if f != fn]

    def publish(self, event: Event) -> None:
        """Deliver to every subscriber; call from the loop thread only."""
        self.history.append(event)
        source = event.source
        for fn, sources in self._listeners:  # replaced, never mutated: safe to iterate
            if sources is not None and source not in sources:
                continue
            try:
                fn(event)
            except Exception:  # an observer must never break delivery
                pass
        for sub in list(self._subs):
            if sub.sources is not None and source not in sub.sources:
                continue
            try:
                if sub.accepts is not None and not sub.accepts(event):
                    continue
            except Exception:  # a broken filter delivers everything rather than nothing
                pass
            sub.queue.put_nowait(event)

    def publish_threadsafe(self, event: Event) -> None:
        """Publish from another thread (signal handlers, executor callbacks)."""
        loop = self._loop or asyncio.get_event_loop()
        loop.call_soon_threadsafe(self.publish, event)

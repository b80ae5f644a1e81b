"""The services the lab can run, behind one interface: `autopilot lab up redis|postgres`.

Everything service-specific lives in the service's own module (lab/redis.py,
lab/postgres.py); the state, processes, faults and observation of the lab only ask this
registry. A new service is one module and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from autopilot.lab import netns, postgres, redis
from autopilot.lab.workload import Driver

if TYPE_CHECKING:
    from autopilot.lab.state import Node, State


@dataclass(frozen=True)
class Service:
    name: str
    config: Path  # the example's autopilot.json5
    port: int  # in netns mode; loopback mode uses port + n
    node_env: Callable[[State, Node], dict[str, str]]
    role: Callable[..., dict[str, Any]]  # (ip, port) -> role, offset, detail (+ extras)
    find_in: Callable[[list[psutil.Process]], int | None]  # the data server's PID
    is_server: Callable[[psutil.Process | None], bool]
    pidfile: Callable[[Node], Path] | None  # a pidfile outside PID namespaces, if any
    missing_tools: Callable[[bool], list[tuple[str, str]]]  # (tool, package), netns mode
    prepare_dir: Callable[[Path], None]  # before a node first starts
    driver: Callable[[int], Driver]  # the chaos workload's way to write (wait_ms)
    server: str  # what `kill --only` calls the data server


def _redis_tools(netns_mode: bool) -> list[tuple[str, str]]:
    return netns.missing_tools(netns_mode)


def _pg_tools(netns_mode: bool) -> list[tuple[str, str]]:
    base = [m for m in netns.missing_tools(netns_mode) if "redis" not in m[1]]
    return base + postgres.missing_tools()


def _pg_driver(wait_ms: int) -> Driver:
    from autopilot.lab.pgload import PgDriver

    return PgDriver(wait_ms)


SERVICES: dict[str, Service] = {
    "redis": Service("redis", redis.CONFIG, 6379, redis.node_env, redis.role, redis.find_in,
                     redis.is_redis, redis.pidfile, _redis_tools, lambda _p: None, Driver,
                     "redis"),
    "postgres": Service("postgres", postgres.CONFIG, postgres.PORT, postgres.node_env,
                        postgres.role, postgres.find_in, postgres.is_postgres, None,
                        _pg_tools, postgres.prepare_dir, _pg_driver, "postgres"),
}


def get(name: str) -> Service:
    try:
        return SERVICES[name]
    except KeyError:
        raise KeyError(f"unknown lab service {name!r} "
                       f"(available: {', '.join(SERVICES)})") from None

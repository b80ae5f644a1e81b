"""What the lab knows about Redis: the example's files, a node's Redis environment, finding
its redis-server, and reading its replication role. The one service-specific room of the lab.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from autopilot.lab.resp import Redis, RedisError

if TYPE_CHECKING:
    from autopilot.lab.state import Node, State

EXAMPLES = Path(__file__).resolve().parent / "examples"
FENCE = "10"  # min-replicas-to-write of a fenced node (see examples/redis/hook.sh)
DETACHED = ("127.0.0.1", "0")  # the master of a replica of nothing (hook.sh's NOWHERE)
CONFIG = EXAMPLES / "redis" / "autopilot.json5"


def node_env(state: State, node: Node) -> dict[str, str]:
    """The REDIS_* variables the example's config and hook read."""
    return {
        "REDIS_HOME": str(EXAMPLES / "redis"),
        "REDIS_PORT": str(node.port),
        "REDIS_DIR": str(Path(node.dir) / "data"),
        "REDIS_BIND": "0.0.0.0" if state.mode == "netns" else "127.0.0.1",
        "REDIS_HOOK_LOG": str(Path(node.dir) / "hooks.log"),
        "REDIS_NO_LOSS": "1" if state.no_loss else "0",
        "REDIS_PYTHON": sys.executable,  # for peers.py (python3 may be a slow shim)
        "REDIS_INTERFACE": "eth0:inet" if state.mode == "netns" else "static:127.0.0.1",
    }


def pidfile(node: Node) -> Path:
    return Path(node.dir) / "data" / "redis-server.pid"


def find_in(procs: list[psutil.Process]) -> int | None:
    """The PID of the redis-server among a node's processes."""
    for p in procs:
        try:
            if p.name() == "redis-server":
                return p.pid
        except psutil.Error:
            continue
    return None


def is_redis(p: psutil.Process | None) -> bool:
    try:
        return p is not None and p.name() == "redis-server"
    except psutil.Error:
        return False


def role(ip: str, port: int, timeout: float = 0.5) -> dict[str, Any]:
    """role (primary | fenced | replica | down), offset and link of one Redis."""
    try:
        with Redis(ip, port, timeout=timeout) as r:
            info = r.info("replication")
            fence = r.call("CONFIG", "GET", "min-replicas-to-write")
    except (OSError, RedisError, ValueError) as exc:
        return {"role": "down", "offset": None, "detail": type(exc).__name__}
    if info.get("role") == "master":
        fenced = isinstance(fence, list) and len(fence) == 2 and fence[1] == FENCE
        return {"role": "fenced" if fenced else "primary",
                "offset": int(info.get("master_repl_offset", 0)),
                "detail": f"{info.get('connected_slaves', 0)} replicas"}
    offset = int(info.get("master_repl_offset", 0) or 0)
    if (info.get("master_host"), info.get("master_port")) == DETACHED:
        return {"role": "replica", "offset": offset, "detail": "detached"}
    return {"role": "replica", "offset": offset,
            "detail": f"of {info.get('master_host')}:{info.get('master_port')} "
                      f"link {info.get('master_link_status')}"}

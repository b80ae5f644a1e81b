"""``--data-dir``: the state as one JSON file, rewritten atomically after each write.

A restart restores KV, sessions, nodes, services and checks and the index (so clients'
blocking indexes stay meaningful). TTL timers restart with a full TTL, as after a Consul
leader change.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from autopilot.catalog.kv import KVEntry
from autopilot.catalog.registry import Check, Node, Service
from autopilot.catalog.sessions import Session
from autopilot.catalog.state import State

log = logging.getLogger("autopilot.catalog")

FILE = "catalog-state.json"
VERSION = 1


def _fields(obj: Any) -> dict[str, Any]:
    """A dataclass's fields, shallow (asdict deep-copies and is ~10x slower)."""
    return dict(vars(obj))


def snapshot(state: State) -> dict[str, Any]:
    """Plain data for json.dumps; shares lists/dicts with the live state, so it must be
    serialised before the loop runs anything else."""
    kv = []
    for e in state.kv.entries.values():
        d = _fields(e)
        d["value"] = base64.b64encode(e.value).decode() if e.value is not None else None
        kv.append(d)
    checks = []
    for c in state.registry.checks.values():
        d = _fields(c)
        d["critical_since"] = None
        checks.append(d)
    return {
        "version": VERSION, "index": state.store.index, "tables": state.store.tables,
        "svc_index": state.registry.svc_index,
        "nodes": [_fields(n) for n in state.registry.nodes.values()],
        "services": [_fields(s) for s in state.registry.services.values()],
        "checks": checks, "kv": kv, "tombstones": state.kv.tombstones,
        "sessions": [_fields(s) for s in state.sessions.sessions.values()],
    }


def restore(state: State, data: dict[str, Any]) -> None:
    reg = state.registry
    state.store.index = max(state.store.index, int(data["index"]))
    state.store.tables.update(data.get("tables", {}))
    reg.svc_index.update(data.get("svc_index", {}))
    for n in data.get("nodes", []):
        reg.nodes[n["name"]] = Node(**n)
    for s in data.get("services", []):
        reg.load_service(Service(**s))
    for c in data.get("checks", []):
        chk = Check(**c)
        if chk.status == "critical":  # the critical clock restarts with the process
            chk.critical_since = time.monotonic()
        reg.load_check(chk)
    for e in data.get("kv", []):
        if e["value"] is not None:
            e["value"] = base64.b64decode(e["value"])
        state.kv.entries[e["key"]] = KVEntry(**e)
    state.kv.tombstones.update(data.get("tombstones", {}))
    for s in data.get("sessions", []):
        state.sessions.sessions[s["id"]] = Session(**s)


class Persister:
    """Writes the snapshot atomically (temp file, fsync, rename) when the state changed."""

    def __init__(self, state: State, directory: str) -> None:
        self.state = state
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / FILE
        self._last_index = -1

    def load(self) -> bool:
        """Restore the saved state; an unreadable file is moved aside (we start empty)."""
        if not self.path.exists():
            return False
        try:
            restore(self.state, json.loads(self.path.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = self.path.with_name(f"{FILE}.unreadable-{int(time.time())}")
            os.replace(self.path, aside)
            log.error("cannot read %s (%s); moved it to %s and starting empty",
                      self.path, exc, aside)
            return False
        self._last_index = self.state.store.index
        return True

    def save(self) -> None:
        if self.state.store.index == self._last_index:
            return
        data = json.dumps(snapshot(self.state), separators=(",", ":"))
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".state-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with __import__("contextlib").suppress(OSError):
                os.unlink(tmp)
            raise
        self._last_index = self.state.store.index

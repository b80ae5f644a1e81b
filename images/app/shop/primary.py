"""Where the Redis primary is: the file autopilot renders, re-read whenever it changes.

The file is replaced atomically (rename), so a changed inode or mtime means new content;
a stat per request is cheap and needs no signal or restart (factor IX: nothing to reload).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass

from shop.settings import Settings


@dataclass(frozen=True)
class Primary:
    host: str
    port: int
    epoch: int | None = None


def choose(doc: dict) -> Primary | None:
    """Pick the primary from the rendered document.

    ``primaries`` are the passing instances tagged primary; ``leader`` the election key's
    holder. Trust a tagged instance the leader agrees with, else any tagged one; with no
    passing primary there is nobody safe to write to.
    """
    primaries = doc.get("primaries") or []
    leader = doc.get("leader") or {}
    epoch = leader.get("epoch") if isinstance(leader, dict) else None
    for p in primaries:
        if leader and p.get("ID") == leader.get("service_id"):
            return Primary(p["Address"], int(p["Port"]), epoch)
    if primaries:
        return Primary(primaries[0]["Address"], int(primaries[0]["Port"]), epoch)
    return None


class PrimarySource:
    """Thread-safe view of the current primary."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._primary: Primary | None = self._fixed()

    def _fixed(self) -> Primary | None:
        s = self.settings
        return Primary(s.redis_host, s.redis_port) if s.redis_host else None

    def current(self) -> Primary | None:
        path = self.settings.redis_file
        try:
            st = os.stat(path)
        except OSError:
            return self._fixed()
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    with open(path, encoding="utf-8") as fh:
                        doc = json.load(fh)
                    self._primary = choose(doc) or self._fixed()
                    self._stamp = stamp
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    print(f"shop: cannot read {path}: {exc}", flush=True)
            return self._primary

"""The KV table: entries, tombstones (for indexes of deleted keys), locks and lock-delays."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

from autopilot.catalog.store import Store


@dataclass
class KVEntry:
    key: str
    value: bytes | None
    flags: int = 0
    lock_index: int = 0
    session: str = ""
    create_index: int = 0
    modify_index: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "LockIndex": self.lock_index, "Key": self.key, "Flags": self.flags,
            # an empty value is JSON null, as Go encodes Consul's nil []byte
            "Value": base64.b64encode(self.value).decode() if self.value else None,
            "CreateIndex": self.create_index, "ModifyIndex": self.modify_index}
        if self.session:
            out["Session"] = self.session
        return out


class KV:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.entries: dict[str, KVEntry] = {}
        self.tombstones: dict[str, int] = {}
        self.lock_delays: dict[str, float] = {}  # key -> time.monotonic() until re-acquire allowed

    # ---- reads -----------------------------------------------------------------------------
    def key_index(self, key: str) -> int:
        """A present key reports its ModifyIndex; a missing one the table index (as Consul)."""
        ent = self.entries.get(key)
        return ent.modify_index if ent else self.store.table("kvs")

    def prefix_index(self, prefix: str) -> int:
        if not prefix:
            return self.store.table("kvs")
        best = max([e.modify_index for k, e in self.entries.items() if k.startswith(prefix)]
                   + [i for k, i in self.tombstones.items() if k.startswith(prefix)] + [0])
        return best or self.store.table("kvs")

    def list(self, prefix: str) -> list[KVEntry]:
        return [self.entries[k] for k in sorted(self.entries) if k.startswith(prefix)]

    def keys(self, prefix: str, separator: str) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        for k in sorted(self.entries):
            if not k.startswith(prefix):
                continue
            if separator:
                cut = k.find(separator, len(prefix))
                if cut >= 0:
                    k = k[:cut + len(separator)]
            if k not in seen:
                seen.add(k)
                out.append(k)
        return out

    # ---- writes ----------------------------------------------------------------------------
    def _stamp(self, key: str) -> int:
        return self.store.touch("table:kvs", f"kv:{key}")

    def _cas_ok(self, key: str, cas: int | None) -> bool:
        if cas is None:
            return True
        ent = self.entries.get(key)
        return (ent is None) if cas == 0 else (ent is not None and ent.modify_index == cas)

    def put(self, key: str, value: bytes, flags: int, cas: int | None = None) -> bool:
        if not self._cas_ok(key, cas):
            return False
        idx = self._stamp(key)
        ent = self.entries.get(key)
        if ent is None:
            ent = self.entries[key] = KVEntry(key=key, value=value, create_index=idx)
            self.tombstones.pop(key, None)
        # Consul's plain (and cas) write takes LockIndex from the request, i.e. 0, and keeps
        # the Session: only acquire/release carry the lock count on
        ent.value, ent.flags, ent.modify_index, ent.lock_index = value, flags, idx, 0
        return True

    def delete(self, key: str, recurse: bool = False, cas: int | None = None) -> bool:
        """Delete a key or prefix; with ``cas`` only at that ModifyIndex (missing -> true)."""
        if recurse:
            doomed = [k for k in self.entries if k.startswith(key)]
        else:
            ent = self.entries.get(key)
            if cas is not None and ent is not None and ent.modify_index != cas:
                return False
            doomed = [key] if ent is not None else []
        for k in doomed:
            idx = self._stamp(k)
            del self.entries[k]
            self.tombstones[k] = idx
        return True  # deleting nothing changes nothing (no index moves, as in Consul)

    def lock_delayed(self, key: str) -> bool:
        until = self.lock_delays.get(key)
        if until is None:
            return False
        if time.monotonic() >= until:
            del self.lock_delays[key]
            return False
        return True

    def acquire(self, key: str, value: bytes, flags: int, session: str,
                cas: int | None = None) -> bool:
        if not self._cas_ok(key, cas):
            return False
        ent = self.entries.get(key)
        if ent is not None and ent.session and ent.session != session:
            return False
        if (ent is None or ent.session != session) and self.lock_delayed(key):
            return False
        idx = self._stamp(key)
        if ent is None:
            ent = self.entries[key] = KVEntry(key=key, value=value, create_index=idx)
            self.tombstones.pop(key, None)
        if ent.session != session:
            ent.lock_index += 1
            ent.session = session
        ent.value, ent.flags, ent.modify_index = value, flags, idx
        return True

    def release(self, key: str, value: bytes, flags: int, session: str,
                cas: int | None = None) -> bool:
        if not self._cas_ok(key, cas):
            return False
        ent = self.entries.get(key)
        if ent is None or ent.session != session:
            return False
        ent.session = ""
        ent.value, ent.flags, ent.modify_index = value, flags, self._stamp(key)
        return True

    def drop_session(self, session: str, behavior: str, lock_delay_ns: int) -> None:
        """A session was invalidated: release or delete its keys and start their lock-delay."""
        held = [k for k, e in self.entries.items() if e.session == session]
        for k in held:
            if lock_delay_ns > 0:
                self.lock_delays[k] = time.monotonic() + lock_delay_ns / 1e9
            if behavior == "delete":
                idx = self._stamp(k)
                del self.entries[k]
                self.tombstones[k] = idx
            else:
                ent = self.entries[k]
                ent.session = ""
                ent.modify_index = self._stamp(k)

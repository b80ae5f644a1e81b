"""``PUT /v1/txn`` with KV operations: all succeed or none apply (state rolled back).

The handler runs synchronously on the loop, so a snapshot-and-restore of the KV table and the
index is a true rollback; no reader can observe the half-applied transaction.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any

from autopilot.catalog import decode
from autopilot.catalog.state import State

MAX_OPS = 64
KV_OP = {"Verb": decode.STR, "Key": decode.STR, "Value": decode.ANY, "Flags": decode.INT,
         "Index": decode.INT, "Session": decode.STR, "Namespace": decode.STR,
         "Partition": decode.STR}


WRITE_VERBS = frozenset({"set", "cas", "lock", "unlock", "delete", "delete-tree",
                         "delete-cas"})


class TxnAbort(Exception):
    pass


def read_only(ops: list[Any]) -> bool:
    """Consul answers a transaction without write verbs on its read path (query meta in
    the body and the headers, no raft apply)."""
    return all(not (isinstance(op, dict) and isinstance(op.get("KV"), dict)
                    and op["KV"].get("Verb") in WRITE_VERBS) for op in ops)


class TxnBadRequest(Exception):
    pass


def _value(op: dict[str, Any]) -> bytes:
    raw = op.get("Value")
    if raw in (None, ""):
        return b""
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise TxnBadRequest(f"Failed to parse body: illegal base64 data at input byte "
                            f"{_bad_base64_at(raw)}") from None


def _bad_base64_at(raw: Any) -> int:
    """Where Go's base64 decoder gives up: the first byte outside the alphabet, else the
    end of the last complete quantum (a length that is not a multiple of 4)."""
    text = str(raw)
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    for i, ch in enumerate(text.rstrip("=")):
        if ch not in alphabet:
            return i
    return len(text) - len(text) % 4


def _entry(state: State, key: str, with_value: bool) -> dict[str, Any]:
    data = state.kv.entries[key].to_json()
    if not with_value:
        data["Value"] = None
    return data


def _apply(state: State, op: dict[str, Any]) -> list[dict[str, Any]]:
    kv = state.kv
    verb, key = op.get("Verb", ""), op.get("Key", "")
    flags, index, session = int(op.get("Flags") or 0), op.get("Index"), op.get("Session") or ""
    ent = kv.entries.get(key)
    if verb == "set":
        kv.put(key, _value(op), flags)
    elif verb == "cas":
        if not kv.put(key, _value(op), flags, int(index or 0)):
            raise TxnAbort(f'failed to set key "{key}", index is stale')
    elif verb == "lock":
        if session not in state.sessions.sessions:
            raise TxnAbort(f'invalid session "{session}"')
        if not kv.acquire(key, _value(op), flags, session):
            raise TxnAbort(f'failed to lock key "{key}", lock is already held')
    elif verb == "unlock":
        if not kv.release(key, _value(op), flags, session):
            raise TxnAbort(f'failed to unlock key "{key}", lock isn\'t held, or is held by '
                           "another session")
    elif verb == "get":
        if ent is None:
            raise TxnAbort(f'key "{key}" doesn\'t exist')
        return [{"KV": _entry(state, key, True)}]
    elif verb == "get-tree":
        return [{"KV": e.to_json()} for e in kv.list(key)]
    elif verb == "check-index":
        if ent is None:
            raise TxnAbort(f'key "{key}" doesn\'t exist')
        if ent.modify_index != int(index or 0):
            raise TxnAbort(f'failed index check for key "{key}", current modify index '
                           f"{ent.modify_index} != {int(index or 0)}")
        return [{"KV": _entry(state, key, False)}]
    elif verb == "check-session":
        if ent is None:
            raise TxnAbort(f'key "{key}" doesn\'t exist')
        if ent.session != session:
            raise TxnAbort(f'current session "{ent.session}" != "{session}"')
        return [{"KV": _entry(state, key, False)}]
    elif verb == "check-not-exists":
        if ent is not None:
            raise TxnAbort(f'key "{key}" exists')
        return []
    elif verb == "delete":
        kv.delete(key)
        return []
    elif verb == "delete-tree":
        kv.delete(key, recurse=True)
        return []
    elif verb == "delete-cas":
        if not kv.delete(key, cas=int(index or 0)):
            raise TxnAbort(f'failed to delete key "{key}", index is stale')
        return []
    else:
        raise TxnAbort(f'unknown KV verb "{verb}"')
    return [{"KV": _entry(state, key, False)}] if key in kv.entries else []


def run_txn(state: State, ops: list[dict[str, Any]]) -> tuple[list | None, list | None]:
    """Apply ``ops`` (already-decoded ``{"KV": {...}}`` items); return (results, errors)."""
    if len(ops) > MAX_OPS:
        raise OverflowError(f"Transaction contains too many operations ({len(ops)} > {MAX_OPS})")
    kv, store = state.kv, state.store
    saved = ({k: dataclasses.replace(e) for k, e in kv.entries.items()}, dict(kv.tombstones),
             dict(kv.lock_delays), store.index, dict(store.tables), set(store._pending),
             store._current)
    results: list[dict[str, Any]] = []
    for i, item in enumerate(ops):
        if not isinstance(item, dict) or set(item) != {"KV"} or not isinstance(item["KV"], dict):
            raise TxnBadRequest("Failed to parse body: only KV operations are supported")
        try:
            op = decode.conform(item["KV"], KV_OP)
        except decode.DecodeError as exc:
            raise TxnBadRequest(f"Failed to parse body: {exc}") from None
        try:
            results += _apply(state, op)
        except TxnAbort as exc:
            (kv.entries, kv.tombstones, kv.lock_delays, store.index, store.tables,
             store._pending, store._current) = saved
            return None, [{"OpIndex": i, "What": str(exc)}]
    return results, None

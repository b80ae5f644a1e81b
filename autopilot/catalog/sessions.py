"""Sessions: creation rules, TTL timers, check binding and invalidation.

A session is invalidated when destroyed, when its TTL lapses without renewal (we expire it
after exactly TTL; Consul may wait up to 2×TTL), or at once when a check it is bound to turns
critical or is removed. Invalidation releases or deletes its locks and starts their lock-delay.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from autopilot.catalog.durations import SECOND, DurationError, format_duration, parse_duration
from autopilot.catalog.kv import KV
from autopilot.catalog.registry import CRITICAL, SERF_CHECK, Registry
from autopilot.catalog.store import Store

MIN_TTL = 10 * SECOND
MAX_TTL = 24 * 3600 * SECOND
DEFAULT_LOCK_DELAY = 15 * SECOND


class SessionError(Exception):
    """Answered as 500 with the message, as Consul's RPC errors are."""


@dataclass
class Session:
    id: str
    node: str
    name: str = ""
    checks: list[str] = field(default_factory=list)
    #: None when the body said ``"NodeChecks": null`` (Consul then binds no node check and
    #: shows null)
    node_checks: list[str] | None = field(default_factory=list)
    service_checks: list[dict[str, str]] = field(default_factory=list)
    lock_delay_ns: int = DEFAULT_LOCK_DELAY
    behavior: str = "release"
    ttl: str = ""
    create_index: int = 0
    modify_index: int = 0

    def bound_checks(self) -> list[str]:
        return list(dict.fromkeys(self.checks + (self.node_checks or [])
                                  + [sc["ID"] for sc in self.service_checks]))

    def to_json(self) -> dict[str, Any]:
        return {"ID": self.id, "Name": self.name, "Node": self.node,
                "LockDelay": self.lock_delay_ns, "Behavior": self.behavior, "TTL": self.ttl,
                # Consul 1.10 folds the legacy Checks into NodeChecks and has no Checks key
                "NodeChecks": (None if self.node_checks is None and not self.checks
                               else list(dict.fromkeys((self.node_checks or []) + self.checks))),
                "ServiceChecks": [dict(sc) for sc in self.service_checks] or None,
                "CreateIndex": self.create_index,
                "ModifyIndex": self.modify_index}


def parse_lock_delay(value: Any) -> int:
    """LockDelay: a Go duration string or a number of nanoseconds; below 1000 ns it counts
    as seconds (Consul's fix-up for clients sending ``5`` meaning 5 s)."""
    if value is None:
        return DEFAULT_LOCK_DELAY
    if isinstance(value, bool):
        raise DurationError(f"invalid LockDelay {value!r}")
    ns = int(value) if isinstance(value, int | float) else parse_duration(value)
    return ns * SECOND if ns < 1000 else ns  # Consul: tiny values were meant as seconds


class Sessions:
    def __init__(self, store: Store, registry: Registry, kv: KV, node: str) -> None:
        self.store, self.registry, self.kv, self.node = store, registry, kv, node
        self.sessions: dict[str, Session] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        registry.on_check_lost.append(self._check_lost)

    # ---- create/destroy/renew --------------------------------------------------------------
    def create(self, body: dict[str, Any]) -> Session:
        sess = Session(id=str(uuid.uuid4()), node=body.get("Node") or self.node,
                       name=body.get("Name") or "")
        if "NodeChecks" in body:
            raw = body["NodeChecks"]
            sess.node_checks = None if raw is None else list(raw)
        elif "Checks" in body:
            sess.node_checks = []
        else:
            sess.node_checks = [SERF_CHECK]
        sess.checks = list(body.get("Checks") or [])
        sess.service_checks = [{"ID": sc.get("ID", ""), "Namespace": sc.get("Namespace") or ""}
                               for sc in body.get("ServiceChecks") or []]
        try:
            sess.lock_delay_ns = parse_lock_delay(body.get("LockDelay"))
        except DurationError as exc:
            raise ValueError(str(exc)) from None
        behavior = body.get("Behavior") or "release"
        if behavior not in ("release", "delete"):
            raise SessionError(f"Invalid Behavior setting '{behavior}'")
        sess.behavior = behavior
        ttl = body.get("TTL") or ""
        if ttl:
            try:
                ttl_ns = parse_duration(ttl)
            except DurationError as exc:
                raise SessionError(f"Session TTL '{ttl}' invalid: {exc}") from None
            if ttl_ns != 0 and not MIN_TTL <= ttl_ns <= MAX_TTL:
                raise SessionError(f"Invalid Session TTL '{ttl_ns}', must be between "
                                   f"[{format_duration(MIN_TTL)}={format_duration(MAX_TTL)}]")
        sess.ttl = ttl
        if sess.node not in self.registry.nodes:
            raise SessionError("apply failed: Missing node registration")
        for cid in sess.bound_checks():
            chk = self.registry.checks.get((sess.node, cid))
            if chk is None:
                raise SessionError(f"apply failed: Missing check '{cid}' registration")
            if chk.status == CRITICAL:
                raise SessionError(f"apply failed: Check '{cid}' is in critical state")
        idx = self.store.touch("table:sessions", f"session:{sess.id}")
        sess.create_index = sess.modify_index = idx
        self.sessions[sess.id] = sess
        self._arm(sess)
        return sess

    def _ttl_ns(self, sess: Session) -> int:
        try:
            return parse_duration(sess.ttl) if sess.ttl else 0
        except DurationError:
            return 0

    def _arm(self, sess: Session) -> None:
        old = self._timers.pop(sess.id, None)
        if old:
            old.cancel()
        ttl = self._ttl_ns(sess)
        if ttl > 0:
            loop = asyncio.get_running_loop()
            self._timers[sess.id] = loop.call_later(ttl / 1e9, self._expire, sess.id)

    def arm_all(self) -> None:
        """Start TTL timers for restored sessions (a full TTL from now, as after a failover)."""
        for sess in self.sessions.values():
            self._arm(sess)

    def _expire(self, sid: str) -> None:
        self._timers.pop(sid, None)
        if self.destroy(sid):
            self.store.commit()

    def renew(self, sid: str) -> Session | None:
        sess = self.sessions.get(sid)
        if sess is not None:
            self._arm(sess)
        return sess

    def destroy(self, sid: str) -> bool:
        sess = self.sessions.pop(sid, None)
        if sess is None:
            return False
        timer = self._timers.pop(sid, None)
        if timer:
            timer.cancel()
        self.store.touch("table:sessions", f"session:{sid}")
        self.kv.drop_session(sid, sess.behavior, sess.lock_delay_ns)
        return True

    def _check_lost(self, node: str, cid: str) -> None:
        for sess in list(self.sessions.values()):
            if sess.node == node and cid in sess.bound_checks():
                self.destroy(sess.id)

    # ---- reads -----------------------------------------------------------------------------
    def index(self) -> int:
        return self.store.table("sessions")

    def session_index(self, sid: str) -> int:
        sess = self.sessions.get(sid)
        return sess.modify_index if sess else self.index()

    def list(self, node: str | None = None) -> list[Session]:
        found = [s for s in self.sessions.values() if node is None or s.node == node]
        return sorted(found, key=lambda s: s.id)  # Consul's state store walks its ID index

"""A client that keeps writing and reading through faults, a timeline, and invariant checks.

Used by the chaos tests and the failover benchmark. The writer sends `SET w:<seq> <seq>`
(plus `WAIT 1 <ms>` in no-loss mode; for PostgreSQL an autocommit `INSERT`, see
`Driver`) to whichever node accepts it, trying every member
in turn after an error, so it measures when *some* node accepts writes again independently
of how fast the catalog propagates. A prober tries a write on every node each round: two
nodes accepting in the same round, or acks interleaving A-B-A-B, break I1. Every ack, error
streak, role change and injected fault lands on one timeline, printed when a check fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from autopilot.lab.resp import Redis, RedisError


@dataclass(frozen=True)
class Member:
    name: str
    host: str
    port: int


class Driver:
    """How the workload talks to one kind of service: Redis here, PostgreSQL in
    lab/pgload.py. A connection is reused until an error; `errors` are the failures that
    mean "this node does not take the write now"."""

    errors: tuple[type[BaseException], ...] = (OSError, RedisError, ValueError)

    def __init__(self, wait_ms: int = 0) -> None:
        self.wait_ms = wait_ms

    def connect(self, m: Member, timeout: float) -> Any:
        return Redis(m.host, m.port, timeout=timeout)

    def write(self, conn: Any, seq: int, timeout: float) -> bool:
        """Write `seq`; True when acknowledged (in no-loss mode: confirmed by a replica)."""
        conn.call("SET", f"w:{seq}", seq)
        if not self.wait_ms:
            return True
        n = conn.call("WAIT", 1, self.wait_ms, timeout=timeout + self.wait_ms / 1000)
        return isinstance(n, int) and n >= 1

    def read(self, conn: Any, seq: int) -> str | None:
        got = conn.call("GET", f"w:{seq}")
        return None if got is None else str(got)

    def probe(self, conn: Any, name: str, wait_ms: int = 0) -> bool:
        """Try a write; True when it counts as accepted (with `wait_ms`: WAIT-confirmed)."""
        conn.call("SET", f"probe:{name}", time.time())
        return not wait_ms or conn.call("WAIT", 1, wait_ms, timeout=0.2 + wait_ms / 1000) != 0

    def missing(self, m: Member, seqs: list[int]) -> list[int]:
        return missing_keys(m, seqs)


class Timeline:
    """Timestamped events (monotonic, relative to creation), safe to append from threads."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()

    def add(self, kind: str, detail: str = "", at: float | None = None) -> float:
        t = (time.monotonic() if at is None else at) - self.t0
        with self._lock:
            self.events.append((t, kind, detail))
        return t + self.t0

    def first(self, kind: str, after: float = 0.0) -> float | None:
        """Absolute monotonic time of the first `kind` event at or after `after`."""
        with self._lock:
            for t, k, _ in sorted(self.events):
                if k == kind and t + self.t0 >= after:
                    return t + self.t0
        return None

    def format(self, limit: int = 400) -> str:
        with self._lock:
            evs = sorted(self.events)
        if len(evs) > limit:
            evs = evs[: limit // 2] + [(evs[limit // 2][0], "...", f"{len(evs) - limit} more")] \
                + evs[-limit // 2:]
        return "\n".join(f"{t:+9.3f}s  {k:<14} {d}" for t, k, d in evs)


@dataclass
class Ack:
    t: float
    node: str
    seq: int


@dataclass
class Results:
    acks: list[Ack] = field(default_factory=list)
    unconfirmed: int = 0  # SET succeeded but WAIT did not confirm a replica (no-loss mode)
    failures: int = 0
    probe_overlaps: list[tuple[float, list[str]]] = field(default_factory=list)
    probe_acks: list[tuple[float, str]] = field(default_factory=list)
    read_mismatches: list[str] = field(default_factory=list)


class Workload:
    """Writer + reader + prober threads over a fixed member list, bounded in time and count."""

    def __init__(self, members: Iterable[Member], timeline: Timeline, *, wait_ms: int = 0,
                 interval: float = 0.005, probe_interval: float = 0.05,
                 max_seconds: float = 120.0, max_ops: int = 200_000,
                 op_timeout: float = 0.5, probe_wait_ms: int = 0,
                 driver: Driver | None = None) -> None:
        self.members = list(members)
        #: no-loss mode's meaning of "accepts a write" for the prober (I1): SET then
        #: WAIT 1 <ms> confirms it on a replica (a resumed, detached zombie may still take
        #: a plain SET for a few ms, but can have nothing acknowledged)
        self.probe_wait_ms = probe_wait_ms
        self.driver = driver or Driver(wait_ms)
        self.timeline = timeline
        self.wait_ms = wait_ms
        self.interval = interval
        self.probe_interval = probe_interval
        self.max_seconds = max_seconds
        self.max_ops = max_ops
        self.op_timeout = op_timeout
        self.results = Results()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.current: str | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Workload:
        for fn in (self._writer, self._prober):
            t = threading.Thread(target=fn, daemon=True, name=fn.__name__)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> Results:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        return self.results

    def wait_acks(self, n: int, timeout: float = 10.0, after: float = 0.0) -> bool:
        """Block until `n` acks happened after `after` (monotonic), or the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                count = sum(1 for a in self.results.acks if a.t >= after)
            if count >= n:
                return True
            time.sleep(0.01)
        return False

    # ------------------------------------------------------------ writer and reader
    def _writer(self) -> None:
        drv = self.driver
        conns = {m.name: drv.connect(m, self.op_timeout) for m in self.members}
        order = [m.name for m in self.members]
        idx = 0
        seq = 0
        failing_since: float | None = None
        deadline = time.monotonic() + self.max_seconds
        try:
            while not self._stop.is_set() and time.monotonic() < deadline and seq < self.max_ops:
                name = order[idx % len(order)]
                seq += 1
                try:
                    confirmed = drv.write(conns[name], seq, self.op_timeout)
                    now = time.monotonic()
                    if confirmed:
                        with self._lock:
                            self.results.acks.append(Ack(now, name, seq))
                    else:
                        self.results.unconfirmed += 1
                    if name != self.current:
                        self.timeline.add("writes-ok", f"{name} accepts writes (seq {seq})", now)
                        self.current = name
                    if failing_since is not None:
                        failing_since = None
                    if seq % 20 == 0:
                        self._read_back(conns[name], name, seq)
                    self._stop.wait(self.interval)
                except drv.errors as exc:
                    self.results.failures += 1
                    if failing_since is None:
                        failing_since = time.monotonic()
                        self.timeline.add("write-error", f"{name}: {str(exc)[:60]}")
                    idx += 1
                    if idx % len(order) == 0:
                        self._stop.wait(0.01)
        finally:
            for c in conns.values():
                c.close()

    def _read_back(self, conn: Any, name: str, seq: int) -> None:
        try:
            got = self.driver.read(conn, seq)
        except self.driver.errors:
            return
        if got != str(seq):
            self.results.read_mismatches.append(f"{name} w:{seq} -> {got!r}")
            self.timeline.add("read-mismatch", f"{name} w:{seq} -> {got!r}")

    # ------------------------------------------------------------ prober (I1)
    def _prober(self) -> None:
        drv = self.driver
        conns = {m.name: drv.connect(m, 0.2) for m in self.members}
        deadline = time.monotonic() + self.max_seconds
        last: list[str] = []
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                accepted = []
                for m in self.members:
                    try:
                        if not drv.probe(conns[m.name], m.name, self.probe_wait_ms):
                            continue  # not acknowledged: not accepted in no-loss terms
                        accepted.append(m.name)
                        self.results.probe_acks.append((time.monotonic(), m.name))
                    except drv.errors:
                        pass
                now = time.monotonic()
                if len(accepted) > 1:
                    self.results.probe_overlaps.append((now, accepted))
                    self.timeline.add("I1-overlap", f"writable at once: {accepted}", now)
                if accepted != last:
                    self.timeline.add("writable", ",".join(accepted) or "none", now)
                    last = accepted
                self._stop.wait(self.probe_interval)
        finally:
            for c in conns.values():
                c.close()

    # ------------------------------------------------------------ measurements
    def failover(self, fault_at: float, old: str) -> dict[str, float | None]:
        """Fault -> first ack by another node; last ack on `old` -> that first ack (gap)."""
        acks = self.results.acks
        first_new = next((a.t for a in acks if a.t > fault_at and a.node != old), None)
        last_old = max((a.t for a in acks if a.node == old and
                        (first_new is None or a.t <= first_new)), default=None)
        return {
            "failover_s": None if first_new is None else first_new - fault_at,
            "write_gap_s": None if first_new is None or last_old is None
            else first_new - last_old,
        }


def interleavings(acks: list[tuple[float, str]]) -> list[str]:
    """I1 from acks alone: runs A, B, A, B (two nodes taking writes in turn) mean overlap."""
    runs: list[tuple[str, float, float]] = []
    for t, node in sorted(acks):
        if runs and runs[-1][0] == node:
            runs[-1] = (node, runs[-1][1], t)
        else:
            runs.append((node, t, t))
    bad = []
    for i in range(len(runs) - 3):
        a, b, c, d = runs[i: i + 4]
        if a[0] == c[0] and b[0] == d[0] and a[0] != b[0]:
            bad.append(f"{a[0]} and {b[0]} took writes in turn between "
                       f"{a[1]:.3f} and {d[2]:.3f}")
    return bad


def hold_back_replication(primary: Member, seconds: float = 0.0) -> None:
    """Make the primary the only holder of new writes until it dies.

    On loopback or a veth a replica receives a write within microseconds (and SIGSTOP of a
    replica does not help: the kernel keeps receiving into its socket), so a lost-write
    check would prove nothing. Instead the primary's default user loses PSYNC/SYNC and its
    replicas are disconnected: they cannot reconnect, and writes acknowledged from now on
    exist on the primary alone."""
    with Redis(primary.host, primary.port) as r:
        r.call("ACL", "SETUSER", "default", "-psync", "-sync")
        r.call("CLIENT", "KILL", "TYPE", "replica")
    if seconds:
        time.sleep(seconds)


def missing_keys(member: Member, seqs: list[int], batch: int = 500,
                 timeout: float = 2.0) -> list[int]:
    """The acknowledged sequence numbers that `member` does not hold (I2 / I3)."""
    missing: list[int] = []
    with Redis(member.host, member.port, timeout=timeout) as r:
        for i in range(0, len(seqs), batch):
            chunk = seqs[i: i + batch]
            vals = r.call("MGET", *[f"w:{s}" for s in chunk])
            assert isinstance(vals, list)
            missing += [s for s, v in zip(chunk, vals, strict=True) if v != str(s)]
    return missing


def check_invariants(workload: Workload, final_members: list[Member], *,
                     no_loss: bool, extra: Callable[[], list[str]] | None = None
                     ) -> tuple[list[str], dict[str, Any]]:
    """I1-I3 over a finished workload: (violations, figures). `final_members[0]` is the
    primary; the others must hold every acked write too (convergence)."""
    res = workload.results
    violations: list[str] = []
    for t, nodes in res.probe_overlaps:
        violations.append(f"I1: {nodes} accepted probe writes in the same round "
                          f"at {t - workload.timeline.t0:+.3f}s")
    all_acks = [(a.t - workload.timeline.t0, a.node) for a in res.acks] + \
        [(t - workload.timeline.t0, n) for t, n in res.probe_acks]
    violations += [f"I1: {v}" for v in interleavings(all_acks)]
    seqs = [a.seq for a in res.acks]
    figures: dict[str, Any] = {"acked": len(seqs), "failed": res.failures,
                               "unconfirmed": res.unconfirmed}
    if final_members:
        lost = workload.driver.missing(final_members[0], seqs)
        figures["lost"] = len(lost)
        if lost and no_loss:
            violations.append(f"I2: {len(lost)} acknowledged writes lost on the primary "
                              f"{final_members[0].name}: {lost[:10]}")
        for m in final_members[1:]:
            gone = set(workload.driver.missing(m, seqs)) - set(lost)
            if gone:
                violations.append(f"I3: replica {m.name} lacks {len(gone)} writes the "
                                  f"primary holds: {sorted(gone)[:10]}")
    violations += [f"read: {m}" for m in res.read_mismatches if no_loss]
    if extra:
        violations += extra()
    return violations, figures

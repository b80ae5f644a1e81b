"""The chaos workload's PostgreSQL side: the writes, reads and probes of `Workload` as SQL,
and the faults that make a lost-write check mean something on PostgreSQL.

Every statement is its own autocommit transaction: a reply to an INSERT is an acknowledged
commit (in sync mode, flushed by a synchronous standby as well). A primary fenced by the
hooks (synchronous_standby_names naming a standby that never comes) leaves commits waiting,
so they time out here and are never counted as acknowledged.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable
from typing import Any

import psutil

from autopilot.lab.pgwire import PgError, Postgres
from autopilot.lab.workload import Driver, Member

SCHEMA = ("create table if not exists w (seq bigint primary key, at timestamptz default now())",
          "create table if not exists probe (name text primary key, t float8)")


class PgDriver(Driver):
    errors = (OSError, PgError, ValueError)

    def connect(self, m: Member, timeout: float) -> Postgres:
        return Postgres(m.host, m.port, timeout=timeout)

    def write(self, conn: Any, seq: int, timeout: float) -> bool:
        conn.query(f"insert into w (seq) values ({int(seq)})", timeout)
        return True

    def read(self, conn: Any, seq: int) -> str | None:
        return conn.value(f"select seq from w where seq = {int(seq)}")

    def probe(self, conn: Any, name: str, wait_ms: int = 0) -> bool:
        # a commit's reply is its acknowledgement (in sync mode: a standby has it too)
        conn.query(f"insert into probe values ('{name}', {time.time()}) "
                   "on conflict (name) do update set t = excluded.t")
        return True

    def missing(self, m: Member, seqs: list[int]) -> list[int]:
        return missing_rows(m, seqs)


def missing_rows(member: Member, seqs: list[int], batch: int = 2000,
                 timeout: float = 5.0) -> list[int]:
    """The acknowledged sequence numbers that `member` does not hold (I2 / I3)."""
    missing: list[int] = []
    with Postgres(member.host, member.port, timeout=timeout) as pg:
        for i in range(0, len(seqs), batch):
            chunk = seqs[i: i + batch]
            have = {int(r[0]) for r in pg.query(  # type: ignore[arg-type]
                "select seq from w where seq = any('{" + ",".join(map(str, chunk)) + "}')")}
            missing += [s for s in chunk if s not in have]
    return missing


def create_schema(members: Iterable[Member], timeout: float = 30.0) -> str:
    """Create the workload's tables on whichever member takes writes; returns its name."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        for m in members:
            try:
                with Postgres(m.host, m.port, timeout=5) as pg:
                    for sql in SCHEMA:
                        pg.query(sql)
                return m.name
            except (OSError, PgError) as exc:
                last = exc
        time.sleep(0.2)
    raise RuntimeError(f"no member took the workload's schema within {timeout}s: {last}")


def server_processes(procs: Iterable[psutil.Process], kind: str) -> list[psutil.Process]:
    """A node's PostgreSQL processes of one kind ("walsender", "walreceiver", ...), found
    by their process title (PIDs inside a node's PID namespace are not the host's)."""
    out = []
    for p in procs:
        try:
            if p.name() == "postgres" and kind in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


def stall(procs: Iterable[psutil.Process], kind: str, resume: bool = False) -> int:
    """SIGSTOP (or SIGCONT) a node's `kind` processes: a walsender stalled on the primary
    keeps new WAL on the primary alone; a walreceiver stalled on a replica stops its acks.
    Returns how many were signalled."""
    n = 0
    for p in server_processes(procs, kind):
        try:
            p.send_signal(signal.SIGCONT if resume else signal.SIGSTOP)
            n += 1
        except psutil.Error:
            pass
    return n

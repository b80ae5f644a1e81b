"""What the lab knows about PostgreSQL: the example's files, a node's PG_* environment,
finding its postmaster, and reading its role, timeline, LSN, lag and sync state.

PostgreSQL refuses to run as root: the supervisor may run as root (the lab does), and the
hook then runs every PostgreSQL program as the `postgres` user (`RUN_AS`); the lab hands a
node's directory to that user first.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from autopilot.lab.pgwire import PgError, Postgres

if TYPE_CHECKING:
    from autopilot.lab.state import Node, State

EXAMPLES = Path(__file__).resolve().parent / "examples"
CONFIG = EXAMPLES / "postgres" / "autopilot.json5"
BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
RUN_AS = "postgres"
PORT = 5432

#: the hooks may take longer than Redis' (initdb, pg_rewind, a re-clone), much longer on a
#: loaded 2-core machine (measured: a bootstrap promote of 40 s)
PROFILE_ENV = {"AP_HOOK_TIMEOUT": "120s"}

STATUS_SQL = """
select pg_is_in_recovery(),
       case when pg_is_in_recovery() then (select timeline_id from pg_control_checkpoint())
            else ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int end,
       pg_wal_lsn_diff(case when pg_is_in_recovery() then pg_last_wal_replay_lsn()
           else pg_current_wal_lsn() end, '0/0')::bigint,
       current_setting('synchronous_standby_names'),
       coalesce((select status || ' ' || sender_host || ':' || sender_port
                 from pg_stat_wal_receiver), ''),
       coalesce((select string_agg(application_name || '=' || sync_state || ':' ||
                        pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)::bigint, ',' order by 1)
                 from pg_stat_replication where not pg_is_in_recovery()), ''),
       (select received_tli from pg_stat_wal_receiver),
       (select coalesce(max(('x' || substr(name, 1, 8))::bit(32)::int), 0) from pg_ls_waldir()
        where name like '%.history')
"""
FENCED_NAME = "autopilot_fenced"  # synchronous_standby_names of a fenced primary (hook.sh)


def missing_tools() -> list[tuple[str, str]]:
    """(tool, Debian package) pairs missing for a PostgreSQL lab."""
    out = []
    for tool in ("postgres", "initdb", "pg_basebackup", "pg_rewind", "psql", "pg_ctl"):
        if not (BIN / tool).exists():
            out.append((str(BIN / tool), "postgresql-15"))
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        out.append((f"user {RUN_AS}", "postgresql-15"))
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        out.append(("setpriv", "util-linux"))
    return out


def node_env(state: State, node: Node) -> dict[str, str]:
    """The PG_* variables the example's config and hook read."""
    env = {
        "PG_HOME": str(EXAMPLES / "postgres"),
        "PG_PORT": str(node.port),
        "PG_DIR": str(Path(node.dir) / "data"),
        "PG_BIN": str(BIN),
        "PG_LISTEN": "*" if state.mode == "netns" else "127.0.0.1",
        "PG_HOOK_LOG": str(Path(node.dir) / "hooks.log"),
        "PG_PYTHON": sys.executable,
        "PG_NAME": node.name,
        "PG_INTERFACE": "eth0:inet" if state.mode == "netns" else "static:127.0.0.1",
        "HOME": str(Path(node.dir)),
        "PG_INITDB_ARGS": "--no-sync",  # the lab's clusters are throw-away
        **PROFILE_ENV,
    }
    if state.no_loss:
        env["PG_SYNC"] = "1"
    if state.mode != "netns":
        env["PG_ADVERTISE_IP"] = "127.0.0.1"
    return env


def prepare_dir(path: Path) -> None:
    """Let the postgres user own a node directory and reach it (every parent traversable)."""
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam(RUN_AS)
    for p in [path, *path.rglob("*")]:
        os.chown(p, pw.pw_uid, pw.pw_gid)
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)  # traversal only: nothing becomes readable


def is_postgres(p: psutil.Process | None) -> bool:
    try:
        return p is not None and p.name() == "postgres"
    except psutil.Error:
        return False


def find_in(procs: list[psutil.Process]) -> int | None:
    """The postmaster's PID among a node's processes (the oldest `postgres` process)."""
    best: tuple[float, int] | None = None
    for p in procs:
        try:
            if p.name() == "postgres" and (best is None or p.create_time() < best[0]):
                best = (p.create_time(), p.pid)
        except psutil.Error:
            continue
    return best[1] if best else None


def role(ip: str, port: int, timeout: float = 0.5) -> dict[str, Any]:
    """role (primary | fenced | replica | down), LSN as offset, and the details.

    A replica's offset is what it has replayed, not received: what a query on it sees. The
    chaos harness waits for equal offsets before it reads every node's rows (I3); WAL
    received but not yet replayed made a loaded replica look in sync while its rows lagged.
    """
    try:
        with Postgres(ip, port, timeout=timeout) as pg:
            rows = pg.query(STATUS_SQL)
    except (OSError, PgError, ValueError) as exc:
        # what the server answered (e.g. not yet consistent, shutting down): a trial that
        # waits for convergence in vain then says why in its error
        return {"role": "down", "offset": None, "detail": f"{type(exc).__name__}: {exc}"[:80],
                "timeline": None, "sync": ""}
    rec, tli, lsn, ssn, wal, standbys, rtli, newest = rows[0]
    if rec == "f":
        fenced = ssn == FENCED_NAME
        return {"role": "fenced" if fenced else "primary", "offset": int(lsn or 0),
                "timeline": int(tli or 0), "sync": ssn,
                "detail": f"standbys {standbys or 'none'}"}
    # "up" only when streaming on the newest timeline it knows of: a replica whose WAL went
    # past the new primary's fork point streams the old timeline again and again, in a loop
    # (its status flickers to 'streaming'), and never follows
    up = (wal or "").startswith("streaming") and int(rtli or 0) >= int(newest or 0)
    return {"role": "replica", "offset": int(lsn or 0), "timeline": int(rtli or tli or 0),
            "sync": "", "detail": f"of {wal.split(' ', 1)[1] if ' ' in (wal or '') else '-'} "
                                  f"link {'up' if up else 'down'}"}

"""The PostgreSQL example's promote hook as a hand-over's named successor
(docs/postgres.md, "hand-over"): with what the old primary handed over
(AUTOPILOT_HANDOVER_*: its members, sync set and shutdown checkpoint) it reads no catalog
and asks no peer, so its one check is the WAL it received: past that checkpoint it
promotes and publishes the sync record itself (curl); not past it, it refuses and stays a
standby, and a candidacy decides. Driven against one real PostgreSQL 15 standby (no
primary: its replayed WAL is all there is) and the real catalog process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import CatalogProcess, free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "autopilot/lab/examples/postgres"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
AS_PG = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


@pytest.fixture
def standby() -> Iterator[dict[str, str]]:
    """A PostgreSQL 15 server started as a standby of nobody, laid out as the hook wants
    ($PG_DIR/pgdata); yields the hook's environment."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 missing: apt-get install postgresql-15")
    base = Path(tempfile.mkdtemp(prefix="ap-pg-handover-"))  # postgres must reach it
    shutil.chown(base, "postgres", "postgres")
    data = base / "pgdata"
    port = free_port()
    subprocess.run([*AS_PG, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U",
                    "postgres", "--no-sync"], check=True, capture_output=True, timeout=120)
    subprocess.run([*AS_PG, "touch", str(data / "standby.signal")], check=True)
    subprocess.run([*AS_PG, str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-t", "60",
                    "-l", str(base / "pg.log"), "-o",
                    f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                    f"-c fsync=off", "start"], check=True, capture_output=True, timeout=90)
    try:
        yield {"PATH": os.environ["PATH"], "PG_DIR": str(base), "PG_PORT": str(port),
               "PG_HOME": str(EXAMPLE), "PG_BIN": str(PG_BIN), "PG_NAME": "node_b",
               "AUTOPILOT_POSTGRES_IP": "127.0.0.1", "PG_HOOK_LOG": str(base / "hooks.log"),
               "AUTOPILOT_ROLE": "primary", "AUTOPILOT_LEADER_EPOCH": "7",
               # the old primary (node_a, stopped: nothing listens on its port) and us
               "AUTOPILOT_HANDOVER_PRIMARY": "node_a",
               "AUTOPILOT_HANDOVER_MEMBERS": f"node_a 127.0.0.1 1 passing postgres15 0;"
                                             f"node_b 127.0.0.1 {port} passing postgres15 0"}
    finally:
        subprocess.run([*AS_PG, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def sql(env: dict[str, str], query: str, timeout: float = 30) -> str:
    return subprocess.run([str(PG_BIN / "psql"), "-X", "-Atq", "-h", "127.0.0.1", "-p",
                           env["PG_PORT"], "-U", "postgres", "-d", "postgres", "-c", query],
                          check=True, capture_output=True, text=True,
                          timeout=timeout).stdout.strip()


def promote(env: dict[str, str], **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(EXAMPLE / "hook.sh"), "promote"], env={**env, **extra},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(180)
def test_a_named_successor_checks_the_checkpoint_then_promotes_and_publishes(
        standby: dict[str, str], catalog: CatalogProcess) -> None:
    """1. Handed a checkpoint it has not received past: exit 1, still a standby, nothing
    set. 2. Sync mode, missing from the handed sync set: the full path, where the
    catalog's record decides (here: not in the set, refused). 3. Sync mode, in it: the
    record naming it leader and every other member synchronous is in the catalog
    (published from inside its psql, before pg_promote), the server requires one of them,
    the old primary's slot is ready and the handed members are cached. (One server for
    the three: initdb is most of this test's time.)"""
    replayed = sql(standby, "select pg_last_wal_replay_lsn()")
    refused = promote(standby, AUTOPILOT_HANDOVER_CHECKPOINT=replayed)
    assert refused.returncode == 1, refused.stderr
    assert "not promoting: received nothing, replayed" in refused.stderr, refused.stderr
    assert sql(standby, "select pg_is_in_recovery()") == "t"
    assert sql(standby, "show synchronous_standby_names") == ""

    env = {**standby, "PG_SYNC": "1", "CONSUL": catalog.address}
    # the old primary's record, as the hooks write it (compact)
    requests.put(f"{catalog.url}/v1/kv/service/postgres/sync", timeout=2,
                 data=json.dumps({"leader": "node_a", "epoch": 6, "sync": ["node_c"]},
                                 separators=(",", ":")))
    outside = promote(env, AUTOPILOT_HANDOVER_CHECKPOINT="0/1", AUTOPILOT_HANDOVER_SYNC="node_c")
    assert outside.returncode == 1, outside.stderr
    assert "not in the synchronous set" in outside.stderr, outside.stderr
    assert sql(standby, "select pg_is_in_recovery()") == "t"

    # node_c: a synchronous standby of the old primary; node_d: a member outside its sync
    # set (e.g. an earlier primary, not rewound yet: its history may fork off ours). Both
    # down (port 1): the re-points fail at once.
    members = (f"{standby['AUTOPILOT_HANDOVER_MEMBERS']};node_c 127.0.0.1 1 passing postgres15 0;"
               "node_d 127.0.0.1 1 passing postgres15 0")
    done = promote(env, AUTOPILOT_HANDOVER_CHECKPOINT="0/1", AUTOPILOT_HANDOVER_MEMBERS=members,
                   AUTOPILOT_HANDOVER_SYNC="node_b node_c")
    assert done.returncode == 0, done.stderr
    record = requests.get(f"{catalog.url}/v1/kv/service/postgres/sync?raw", timeout=2).json()
    # only the old primary's other synchronous standby may acknowledge our commits: not the
    # old primary itself, not node_d (no proof that it is on our history)
    assert record == {"leader": "node_b", "epoch": 7, "sync": ["node_c"]}, record
    assert sql(standby, "show synchronous_standby_names") == 'ANY 1 ("node_c")'
    assert sql(standby, "select pg_is_in_recovery()") == "f"
    assert sql(standby, "select string_agg(slot_name, ' ' order by slot_name) "
                        "from pg_replication_slots") == "node_a node_c node_d"
    pg_dir = Path(standby["PG_DIR"])
    assert (pg_dir / "autopilot-role").read_text().split() == ["primary", "7"]
    assert (pg_dir / "sync-names").read_text().split() == ["node_c"]
    cached = (pg_dir / "members-cache").read_text().split("\n")
    assert [ln.split()[0] for ln in cached if ln] == ["node_a", "node_b", "node_c", "node_d"]
    log = (pg_dir / "hooks.log").read_text()
    assert "trace promote: published" in log and "trace promote: promoted" in log, log


@pytest.mark.timeout(180)
def test_a_failover_promote_names_no_member_it_has_not_proven(
        standby: dict[str, str], catalog: CatalogProcess) -> None:
    """Sync mode, a failover (no hand-over notes): the published record names this node
    synchronous under the old primary node_a; no other member answers (the catalog lists
    none). The old primary may have written WAL no standby received, so it is not named:
    synchronous_standby_names is a placeholder no standby has, the new record names no
    standby (only this node may be promoted), and a commit waits (strict) instead of being
    acknowledged by a standby whose history may fork off ours."""
    env = {k: v for k, v in standby.items() if not k.startswith("AUTOPILOT_HANDOVER_")}
    env.update(PG_SYNC="1", CONSUL=catalog.address)
    requests.put(f"{catalog.url}/v1/kv/service/postgres/sync", timeout=2,
                 data=json.dumps({"leader": "node_a", "epoch": 6, "sync": ["node_b"]},
                                 separators=(",", ":")))
    done = promote(env)
    assert done.returncode == 0, done.stderr
    assert sql(standby, "select pg_is_in_recovery()") == "f"
    assert sql(standby, "show synchronous_standby_names") == "autopilot_unproven"
    record = requests.get(f"{catalog.url}/v1/kv/service/postgres/sync?raw", timeout=2).json()
    assert record == {"leader": "node_b", "epoch": 7, "sync": []}, record
    pg_dir = Path(standby["PG_DIR"])
    assert (pg_dir / "sync-names").read_text().split() == []
    assert "synchronous: none;" in (pg_dir / "hooks.log").read_text()
    # a commit waits for a standby that is not there
    with pytest.raises(subprocess.TimeoutExpired):
        sql(standby, "create table waits (x int)", timeout=2)

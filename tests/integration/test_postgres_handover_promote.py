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
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import CatalogProcess, free_port, holds, wait_for

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
    the old primary's slot is ready and the handed members are cached. 4. Promoted again
as a restarted supervisor's adopt does: the same names and record. (One server for
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

    # 4. The supervisor restarts and adopts its server (still the primary): the election
    # runs the promote hook again, without hand-over notes. The record is its own: it
    # names the same standby (no placeholder, no smaller record: node_c may hold commits)
    env = {k: v for k, v in env.items() if not k.startswith("AUTOPILOT_HANDOVER_")}
    again = promote(env)
    assert again.returncode == 0, again.stderr
    assert sql(standby, "show synchronous_standby_names") == 'ANY 1 ("node_c")'
    record = requests.get(f"{catalog.url}/v1/kv/service/postgres/sync?raw", timeout=2).json()
    assert record == {"leader": "node_b", "epoch": 7, "sync": ["node_c"]}, record


@pytest.mark.timeout(180)
@pytest.mark.parametrize("reader", ["curl", "python3"])
def test_a_failover_promote_names_no_member_it_has_not_proven(
        standby: dict[str, str], catalog: CatalogProcess, reader: str) -> None:
    """Sync mode, a failover (no hand-over notes): the published record names this node
    synchronous under the old primary node_a; no other member answers (the catalog lists
    none). The old primary may have written WAL no standby received, so it is not named:
    synchronous_standby_names is a placeholder no standby has, the new record names no
    standby (only this node may be promoted), and a commit waits (strict) instead of being
    acknowledged by a standby whose history may fork off ours. The same with the catalog
    read by psql + curl and by catalog.py (an image without curl)."""
    env = {k: v for k, v in standby.items() if not k.startswith("AUTOPILOT_HANDOVER_")}
    env.update(PG_SYNC="1", CONSUL=catalog.address)
    if reader == "python3":
        env["PG_CURL"] = "/nonexistent/curl"
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
    log = (pg_dir / "hooks.log").read_text()
    assert "synchronous: none;" in log, log
    # a commit waits for a standby that is not there: its backend waits on SyncRep (the
    # commit is local), and no acknowledgement comes
    waiting = subprocess.Popen(
        [str(PG_BIN / "psql"), "-X", "-Atq", "-h", "127.0.0.1", "-p", standby["PG_PORT"],
         "-U", "postgres", "-d", "postgres", "-c", "create table waits (x int)"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sql(standby, "select count(*) from pg_stat_activity "
                                      "where wait_event = 'SyncRep'") == "1",
                 30, message="the commit waiting for a synchronous standby")
        holds(lambda: waiting.poll() is None, 1.0, message="the commit still waiting")
    finally:
        waiting.kill()
        waiting.wait(10)


@pytest.mark.timeout(120)
def test_the_promote_reads_the_catalog_with_curl_as_catalog_py_does(
        standby: dict[str, str], catalog: CatalogProcess) -> None:
    """The failover promote's view (one psql that runs curl and parses the JSON: no python3
    start on the failover's path) prints the sync record and the members exactly as
    catalog.py does: name, address (the node's when the service has none), port, worst
    check, tags, and 1 for a member whose failing check says it has no data yet."""
    env = {**standby, "PG_SYNC": "1", "CONSUL": catalog.address}
    for sid, address, tags, status, output in [
            ("postgres-node-a", "10.9.0.1", ["postgres15", "primary"], "passing", "primary"),
            ("postgres-node.c", "10.9.0.3", [], "critical", "no data yet: cloning"),
            ("postgres-node-d", "", ["replica"], "warning", "slow")]:
        requests.put(f"{catalog.url}/v1/agent/service/register", timeout=5, json={
            "ID": sid, "Name": "postgres", "Port": 5432, "Address": address, "Tags": tags,
            "Check": {"CheckID": f"service:{sid}", "TTL": "60s", "Status": "passing"}},
        ).raise_for_status()
        # (a status change: the catalog, like Consul, may defer an output-only one)
        requests.put(f"{catalog.url}/v1/agent/check/update/service:{sid}", timeout=5,
                     json={"Status": status, "Output": output}).raise_for_status()

    def both() -> tuple[list[str], list[str]]:
        view = subprocess.run(["sh", str(EXAMPLE / "hook.sh"), "view"], env=env, text=True,
                              capture_output=True, timeout=30)
        assert view.returncode == 0, view.stdout + view.stderr
        lines = view.stdout.splitlines()
        assert lines[0] == f"self t {lsn(standby)}" and lines[-1] == "end", lines
        ours = [ln.removeprefix("record ").removeprefix("member ") for ln in lines[1:-1]]
        theirs = subprocess.run(
            [sys.executable, str(EXAMPLE / "catalog.py"), "view", "postgres", "postgres",
             "service/postgres/sync"], env=env, text=True, capture_output=True,
            timeout=30, check=True).stdout.splitlines()
        return ours, theirs

    ours, theirs = both()  # no record yet
    assert ours == theirs and ours[0] == "-", (ours, theirs)
    assert len(ours) == 4 and "node_c 10.9.0.3 5432 critical - 1" in ours, ours
    record = {"leader": "node_a", "epoch": 6, "sync": ["node_b", "node_d"]}
    requests.put(f"{catalog.url}/v1/kv/service/postgres/sync", timeout=2,
                 data=json.dumps(record, separators=(",", ":")))
    ours, theirs = both()
    assert ours == theirs and json.loads(ours[0]) == record, (ours, theirs)
    # the position hook reads the record the same way (curl; catalog.py without it)
    for extra in ({}, {"PG_CURL": "/nonexistent/curl"}):
        for name, eligible in (("node_b", True), ("node_c", False), ("node_a", True)):
            pos = subprocess.run(["sh", str(EXAMPLE / "hook.sh"), "position"], text=True,
                                 env={**env, **extra, "PG_NAME": name},
                                 capture_output=True, timeout=30)
            if eligible:
                assert (pos.returncode, pos.stdout.strip()) == (0, lsn(standby)), pos
            else:
                assert pos.returncode == 1, pos
                assert "not in the synchronous set (node_b node_d)" in pos.stderr, pos


def lsn(env: dict[str, str]) -> str:
    """The standby's WAL position as the hook reports it (bytes)."""
    return sql(env, "select pg_wal_lsn_diff(greatest(pg_last_wal_receive_lsn(), "
                    "pg_last_wal_replay_lsn()), '0/0')::bigint")

"""Password authentication (scram-sha-256) for clients and replication, against real
PostgreSQL 15 servers run as the `postgres` user.

First the lab's own client (autopilot/lab/pgwire.py) against one server: it must log in with
the right password and be refused with a wrong or missing one. Then a 3-node cluster with
`PG_AUTH_METHOD=scram-sha-256` and `PGPASSWORD`: it bootstraps (initdb gives the superuser
the password), clones (pg_basebackup), streams, fails over and rewinds the old primary
(pg_rewind), all with the password, which never lands in postgresql.auto.conf.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopilot.lab.pgwire import PgError, Postgres
from tests.chaos.postgres_scenario import FAILOVER_BUDGET, UP_TIMEOUT, PgScenario, hooks_log
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.chaos

BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
# every character the hooks must carry through unharmed: pgpass escapes ':' and '\',
# SQL quotes "'", a shell would split on ' '
PASSWORD = "s3cr:t\\ 'pw"


def as_postgres(*cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                           "--", *cmd], capture_output=True, text=True, check=True, **kw)


@pytest.fixture
def scram_server() -> Iterator[int]:
    """One PostgreSQL 15 asking every TCP client for a SCRAM password; yields its port."""
    if not (BIN / "postgres").exists():
        pytest.skip("needs postgresql-15")
    base = Path(tempfile.mkdtemp(prefix="ap-pg-auth-"))
    pw = pwd.getpwnam("postgres")
    os.chown(base, pw.pw_uid, pw.pw_gid)
    for parent in base.parents:
        os.chmod(parent, parent.stat().st_mode | 0o001)
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    data = base / "data"
    as_postgres(str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "--no-sync",
                f"--pwfile={pwfile}", "--auth=scram-sha-256", "--locale=C.UTF-8")
    port = free_port()
    proc = subprocess.Popen(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                             "--", str(BIN / "postgres"), "-D", str(data), "-p", str(port),
                             "-c", "listen_addresses=127.0.0.1",
                             "-c", "unix_socket_directories="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up() -> bool:
            try:
                Postgres("127.0.0.1", port, timeout=1, password=PASSWORD).value("select 1")
                return True
            except (OSError, PgError):
                return False
        wait_for(up, 30, message="the SCRAM server answering")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(120)
def test_lab_client_speaks_scram(scram_server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with Postgres("127.0.0.1", scram_server, timeout=2, password=PASSWORD) as pg:
        assert pg.value("select current_user") == "postgres"
        assert pg.value("select auth_method from pg_hba_file_rules where type = 'host' "
                        "limit 1") == "scram-sha-256"
    with pytest.raises(PgError) as wrong:
        Postgres("127.0.0.1", scram_server, timeout=2, password="wrong").value("select 1")
    assert wrong.value.code == "28P01"  # invalid_password, from the server
    with pytest.raises(PgError, match="none is set"):
        Postgres("127.0.0.1", scram_server, timeout=2).value("select 1")
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # like libpq: the environment's password
    with Postgres("127.0.0.1", scram_server, timeout=2) as pg:
        assert pg.value("select 1") == "1"


@pytest.mark.timing
@pytest.mark.timeout(480)
def test_pg_cluster_with_passwords_elects_replicates_fails_over(
        lab_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """S1 + S2 + S4 + S11 with scram-sha-256 everywhere: initdb, pg_basebackup, streaming,
    promotion, pg_rewind of the old primary; trust is off (a wrong password is refused);
    the password is in no node's postgresql.auto.conf."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # the lab's status and the workload log in
    lab = lab_factory(service="postgres", nodes=3, profile="default",
                      env={"PG_AUTH_METHOD": "scram-sha-256", "PGPASSWORD": PASSWORD})
    lab.wait_converged(UP_TIMEOUT)
    sc = PgScenario(lab).start()
    old = sc.primary()
    for node in lab.state.nodes.values():
        with pytest.raises(PgError) as refused:
            Postgres(node.ip, node.port, timeout=2, password="wrong").value("select 1")
        assert refused.value.code == "28P01", (node.name, refused.value)
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 20, "writes before the fault")
    # WAL only the old primary holds, so that its return needs a real pg_rewind
    sc.stall(old, "walsender", 2)
    after = time.monotonic()
    sc.wait(lambda: sc.workload.wait_acks(20, 0.1, after=after), 10,
            "writes only the old primary holds")
    sc.killed.add(old)
    t = sc.fault(f"SIGKILL {old}", lab.kill, old)
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], FAILOVER_BUDGET + 10,
            "a new primary accepting writes")
    sc.fault(f"restart {old}", lab.start, old)
    sc.killed.discard(old)
    figures = sc.finish(converge_timeout=90)
    assert "pg_rewind from" in hooks_log(lab, old), hooks_log(lab, old)
    assert "failed" not in hooks_log(lab, old), hooks_log(lab, old)
    for node in lab.state.nodes.values():
        auto = Path(node.dir, "data", "pgdata", "postgresql.auto.conf").read_text()
        assert PASSWORD not in auto and "password=" not in auto, (node.name, auto)
        assert "passfile=" in auto or node.name == sc.workload.current, (node.name, auto)
    print(f"FIGURE pg scram cluster {figures}")

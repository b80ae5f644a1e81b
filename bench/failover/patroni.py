"""Patroni 3.0.2 + a 3-member etcd 3.4 (Debian's packages) on loopback, set up as
../shared/anchors.md says: members pg1-pg3, scope `fo`, maximum_lag_on_failover 1 MiB,
use_pg_rewind, use_slots, data checksums, pg_hba trusting 127.0.0.1, remove the data
directory on a failed rewind or diverged timelines; ttl/loop_wait/retry_timeout and
synchronous_mode per side. Everything runs as the `postgres` user; ports are free ones.
`PatroniSide` is the benchmark's view of it (the interface of bench/failover/harness.py).
"""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from autopilot.lab.pgload import PgDriver, stall
from autopilot.lab.pgwire import PgError, Postgres
from autopilot.lab.workload import Member
from bench.failover.harness import copy_small_files
from bench.failover.sides import fresh_table, wait_pg_in_sync

BIN = "/usr/lib/postgresql/15/bin"
USER = "postgres"


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _as_postgres() -> list[str]:
    return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--"] \
        if os.geteuid() == 0 else []


class PatroniCluster:
    def __init__(self, ttl: int, loop_wait: int, retry_timeout: int, sync: bool) -> None:
        self.ttl, self.loop_wait, self.retry = ttl, loop_wait, retry_timeout
        self.sync = sync
        self.dir = Path(tempfile.mkdtemp(prefix="ap-bench-patroni-"))
        os.chmod(self.dir, 0o755)
        pw = pwd.getpwnam(USER)
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        ports = free_ports(12)
        self.etcd_client, self.etcd_peer = ports[0:3], ports[3:6]
        self.pg_ports, self.rest_ports = ports[6:9], ports[9:12]
        self.names = ["pg1", "pg2", "pg3"]
        self.etcd: list[subprocess.Popen] = []
        self.patroni: dict[str, subprocess.Popen | None] = {}

    # ------------------------------------------------------------ start / stop
    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen:
        out = (self.dir / log).open("ab")
        return subprocess.Popen([*_as_postgres(), *argv], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=self.dir)

    def start(self) -> PatroniCluster:
        cluster = ",".join(f"e{i}=http://127.0.0.1:{p}" for i, p in enumerate(self.etcd_peer))
        for i in range(3):
            self.etcd.append(self._spawn([
                "etcd", "--name", f"e{i}", "--data-dir", str(self.dir / f"etcd{i}"),
                "--listen-client-urls", f"http://127.0.0.1:{self.etcd_client[i]}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_client[i]}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer[i]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer[i]}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"fo-{self.dir.name}"], f"etcd{i}.log"))
        for i, name in enumerate(self.names):
            (self.dir / f"{name}.yml").write_text(self._config(i))
            self.start_member(name)
        self.wait_healthy(240)
        return self

    def _config(self, i: int) -> str:
        name = self.names[i]
        cfg = {
            "scope": "fo", "name": name,
            "restapi": {"listen": f"127.0.0.1:{self.rest_ports[i]}",
                        "connect_address": f"127.0.0.1:{self.rest_ports[i]}"},
            "etcd3": {"hosts": [f"127.0.0.1:{p}" for p in self.etcd_client]},
            "bootstrap": {
                "dcs": {"ttl": self.ttl, "loop_wait": self.loop_wait,
                        "retry_timeout": self.retry, "maximum_lag_on_failover": 1048576,
                        "synchronous_mode": self.sync, "synchronous_mode_strict": False,
                        "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                       "parameters": {
                                           "wal_level": "replica", "hot_standby": "on",
                                           "wal_log_hints": "on", "max_wal_senders": 10,
                                           "max_replication_slots": 10,
                                           "synchronous_commit": "on"}}},
                "initdb": ["data-checksums", {"encoding": "UTF8"}],
                "pg_hba": ["host all all 127.0.0.1/32 trust",
                           "host replication all 127.0.0.1/32 trust"]},
            "postgresql": {
                "listen": f"127.0.0.1:{self.pg_ports[i]}",
                "connect_address": f"127.0.0.1:{self.pg_ports[i]}",
                "data_dir": str(self.dir / name), "bin_dir": BIN,
                "pgpass": str(self.dir / f"pgpass-{name}"),
                "authentication": {"replication": {"username": USER},
                                   "superuser": {"username": USER}},
                "remove_data_directory_on_rewind_failure": True,
                "remove_data_directory_on_diverged_timelines": True,
                "parameters": {"unix_socket_directories": str(self.dir)}},
        }
        return json.dumps(cfg, indent=1)  # YAML is a superset of JSON

    def start_member(self, name: str) -> None:
        p = self.patroni.get(name)
        if p is not None and p.poll() is None:
            return
        self.patroni[name] = self._spawn(["patroni", str(self.dir / f"{name}.yml")],
                                         f"{name}.log")

    def stop(self) -> None:
        """Nothing left running, no directory left behind (also after a failed start)."""
        try:
            for name in self.names:
                self.kill(name)
            for p in self.etcd:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ inspection
    @property
    def members(self) -> list[Member]:
        return [Member(n, "127.0.0.1", p) for n, p in zip(self.names, self.pg_ports, strict=True)]

    def rest(self, name: str, path: str = "patroni") -> dict:
        port = self.rest_ports[self.names.index(name)]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=1) as r:
            return json.load(r)

    def cluster_view(self) -> dict:
        for name in self.names:
            try:
                return self.rest(name, "cluster")
            except OSError:
                continue
        return {}

    def primary_name(self) -> str | None:
        for m in self.cluster_view().get("members", []):
            if m.get("role") == "leader" and m.get("state") == "running":
                return m["name"]
        return None

    def healthy(self) -> bool:
        ms = self.cluster_view().get("members", [])
        leaders = [m for m in ms if m.get("role") == "leader" and m.get("state") == "running"]
        reps = [m for m in ms if m.get("role") in ("replica", "sync_standby")
                and m.get("state") in ("running", "streaming") and (m.get("lag") in (0, "0"))]
        if len(leaders) != 1 or len(reps) != 2:
            return False
        return not self.sync or any(m.get("role") == "sync_standby" for m in ms)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return
            time.sleep(0.5)
        raise RuntimeError(f"patroni cluster not healthy within {timeout}s: "
                           f"{self.cluster_view()} (logs in {self.dir})")

    def leader_epoch(self) -> int | None:
        """A number that changes with every new leader (the leader's timeline)."""
        for m in self.cluster_view().get("members", []):
            if m.get("role") == "leader":
                return int(m.get("timeline") or 0)
        return None

    # ------------------------------------------------------------ faults
    def procs(self, name: str) -> list[psutil.Process]:
        """Patroni and every PostgreSQL process of member `name`."""
        p = self.patroni.get(name)
        out: list[psutil.Process] = []
        if p is not None:
            try:
                root = psutil.Process(p.pid)
                out = [root, *root.children(recursive=True)]
            except psutil.Error:
                pass
        data = str(self.dir / name)
        for q in psutil.process_iter(["name", "cmdline"]):
            try:
                if q.info["name"] == "postgres" and data in " ".join(q.info["cmdline"] or []):
                    out += [q, *q.children(recursive=True)]
            except psutil.Error:
                continue
        return list({q.pid: q for q in out}.values())

    def kill(self, name: str) -> None:
        procs = self.procs(name)
        for q in procs:
            try:
                q.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=5)
        p = self.patroni.get(name)
        if p is not None:
            p.wait(5)

    def patronictl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["patronictl", "-c", str(self.dir / "pg1.yml"), *args],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def switchover(self, leader: str, candidate: str) -> None:
        self.patronictl("switchover", "--leader", leader, "--candidate", candidate, "--force")

    def reinit(self, name: str) -> None:
        """What a Patroni operator does with a member that cannot rejoin (e.g. diverged on
        the same timeline number): a fresh base backup from the leader."""
        self.patronictl("reinit", "fo", name, "--force", "--wait", timeout=180)


class PatroniSide:
    """One Patroni setting, its cluster built once and reused across trials: a killed
    member is started again (Patroni rewinds or re-clones it) before the next trial; one
    that does not come back within `rejoin_timeout` is reinitialized with `patronictl
    reinit`, and the trial records that it had to be."""

    def __init__(self, ttl: int, loop_wait: int, retry: int, sync: bool,
                 rejoin_timeout: float = 90) -> None:
        self.label = f"patroni ttl {ttl}/loop {loop_wait}" + (" sync" if sync else " async")
        self.args = (ttl, loop_wait, retry, sync)
        self.loop_wait, self.durable = loop_wait, sync
        self.rejoin_timeout = rejoin_timeout
        self.cluster: PatroniCluster | None = None

    def prepare(self) -> dict[str, list[str]]:
        """Every member running, one leader, two replicas streaming and caught up; returns
        {"reinit": [members]} when some had to be reinitialized for that."""
        reinit: list[str] = []
        if self.cluster is None:
            self.cluster = PatroniCluster(*self.args)
            self.cluster.start()
        c = self.cluster
        for name in c.names:
            c.start_member(name)
        try:
            c.wait_healthy(self.rejoin_timeout)
            fresh_table(self)
            wait_pg_in_sync(self, self.durable, 30)
        except RuntimeError:
            # a member that does not stream (Patroni may still report it with lag 0)
            streaming = self._streaming()
            for name in c.names:
                if name != c.primary_name() and name not in streaming:
                    reinit.append(name)
                    c.reinit(name)
            c.wait_healthy(240)
            fresh_table(self)
            wait_pg_in_sync(self, self.durable, 60)
        return {"reinit": reinit} if reinit else {}

    def _streaming(self) -> set[str]:
        """The members the leader streams to (Patroni names each walreceiver after its
        member)."""
        assert self.cluster
        leader = self.cluster.primary_name()
        if leader is None:
            return set()
        m = next(m for m in self.members if m.name == leader)
        try:
            with Postgres(m.host, m.port, timeout=2) as pg:
                rows = pg.query("select application_name from pg_stat_replication "
                                "where state = 'streaming'")
        except (OSError, PgError):
            return set()
        return {str(r[0]) for r in rows}

    @property
    def members(self) -> list[Member]:
        assert self.cluster
        return self.cluster.members

    def workload_options(self) -> dict:
        return {"op_timeout": 1.0, "driver": PgDriver()}

    def primary(self) -> str:
        assert self.cluster
        name = self.cluster.primary_name()
        assert name
        return name

    def jitter(self) -> float:
        return random.uniform(0, self.loop_wait)  # anchors: the kill at a random lease point

    def kill(self, name: str) -> None:
        assert self.cluster
        self.cluster.kill(name)

    def graceful(self, name: str) -> None:
        """`patronictl switchover` to the sync standby (any other member in async mode)."""
        assert self.cluster
        view = self.cluster.cluster_view().get("members", [])
        cand = next((m["name"] for m in view if m.get("role") == "sync_standby"), None) or \
            next(m["name"] for m in view if m["name"] != name)
        self.cluster.switchover(name, cand)

    def hold_back(self, name: str, seconds: float) -> None:
        assert self.cluster
        stall(self.cluster.procs(name), "walsender")
        time.sleep(seconds)

    def stall(self, name: str) -> None:
        assert self.cluster
        stall(self.cluster.procs(name), "walreceiver")

    def resume(self, name: str) -> None:
        assert self.cluster
        stall(self.cluster.procs(name), "walreceiver", resume=True)

    def leader_epoch(self) -> int | None:
        assert self.cluster
        return self.cluster.leader_epoch()

    def keep(self, dest: Path) -> None:
        """A failed trial's evidence: the cluster directory's logs (etcd, Patroni,
        PostgreSQL) and Patroni's member list now."""
        assert self.cluster
        copy_small_files(self.cluster.dir, dest)
        try:
            view: object = self.cluster.cluster_view()
        except (OSError, ValueError) as exc:
            view = {"error": str(exc)}
        (dest / "bench-snapshot.json").write_text(json.dumps(view, indent=1))

    def close(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.stop()

"""images/postgres run with plain `docker run`, outside compose, as its README says.

Marker `e2e` (skipped with the reason when no Docker engine answers; .ci/e2e.sh starts one
and builds the images). The README's own blocks (`# start`, `# roles`, `# clean up`) run as
written, on a network, containers and volumes whose names this test owns and a free
loopback port for the catalog; then, from the host, a client writes to the primary (sync
mode), the primary's container is `docker kill`ed, a replica must take writes with no
acknowledged commit lost, and the killed container, started again, must come back as a
streaming replica of the new primary holding every commit. Everything the README created is
removed even when a step fails, and the test checks that nothing is left.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
import yaml

from autopilot.lab.pgload import PgDriver, create_schema
from autopilot.lab.pgwire import PgError, Postgres
from autopilot.lab.workload import Member, Timeline, Workload, check_invariants
from tests.e2e.docker_helpers import engine_problem, run
from tests.e2e.workshop import blocks
from tests.helpers import ROOT, free_port, wait_for

_problem = engine_problem()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(_problem is not None, reason=_problem or ""),
              pytest.mark.timeout(300)]

README = ROOT / "images" / "postgres" / "README.md"
IMAGES = {"autopilot/catalog:dev": "images/catalog/Dockerfile",
          "autopilot/postgres:dev": "images/postgres/Dockerfile"}
#: budgets on 2 shared cores; the figures measured are printed and go to the e2e report
UP_BUDGET = 150.0  # initdb on one node, two pg_basebackup clones
FAILOVER_BUDGET = 30.0  # default image settings: check TTL 3 s + lock-delay 1 s + promote
REJOIN_BUDGET = 60.0  # the killed node restarts, rewinds and streams again


def readme_block(marker: str) -> str:
    """The README's ```sh block whose first line is `# <marker>`."""
    found = [b for b in blocks(README) if b.splitlines()[0].strip() == f"# {marker}"]
    assert len(found) == 1, f"{README}: expected one ```sh block starting '# {marker}'"
    return found[0]


@dataclass
class Nodes:
    """The README's cluster under this test's names: every `pg` name (network, containers,
    hostnames, volumes) becomes `<prefix>`, the catalog's published port a free one."""

    prefix: str = field(default_factory=lambda: f"apxpg{os.getpid()}")
    port: int = field(default_factory=free_port)
    timings: dict[str, float] = field(default_factory=dict)

    def script(self, marker: str) -> str:
        text = re.sub(r"\bpg\b", self.prefix, readme_block(marker))
        return text.replace("127.0.0.1:8500", f"127.0.0.1:{self.port}")

    def sh(self, marker: str, timeout: float = 120, check: bool = True,
           ) -> subprocess.CompletedProcess:
        return run("bash", "-euo", "pipefail", "-c", self.script(marker), timeout=timeout,
                   check=check)

    def container(self, i: int) -> str:
        return f"{self.prefix}-{i}"

    def docker(self, *args: str, timeout: float = 60, check: bool = True,
               ) -> subprocess.CompletedProcess:
        return run("docker", *args, timeout=timeout, check=check)

    def ip(self, i: int) -> str:
        out = self.docker("inspect", "-f",
                          "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                          self.container(i))
        return out.stdout.strip()

    def members(self) -> list[Member]:
        return [Member(self.container(i), self.ip(i), 5432) for i in (1, 2, 3)]

    def catalog_primary(self) -> list[str]:
        url = f"http://127.0.0.1:{self.port}/v1/health/service/postgres?tag=primary&passing"
        return [e["Service"]["ID"].removeprefix("postgres-")
                for e in requests.get(url, timeout=5).json()]

    def leftovers(self) -> list[str]:
        left = []
        for args in (["ps", "-aq", "--filter", f"name={self.prefix}"],
                     ["volume", "ls", "-q", "--filter", f"name={self.prefix}"],
                     ["network", "ls", "-q", "--filter", f"name={self.prefix}"]):
            left += self.docker(*args, check=False).stdout.split()
        return left

    def force_clean(self) -> None:
        """What the README's clean-up block would not remove after a half-run start."""
        ids = self.docker("ps", "-aq", "--filter", f"name={self.prefix}", check=False).stdout
        if ids.split():
            self.docker("rm", "-f", "-v", *ids.split(), check=False)
        vols = self.docker("volume", "ls", "-q", "--filter", f"name={self.prefix}",
                           check=False).stdout.split()
        if vols:
            self.docker("volume", "rm", "-f", *vols, check=False)
        self.docker("network", "rm", self.prefix, check=False)

    def save_logs(self) -> None:
        log_dir = os.environ.get("AUTOPILOT_E2E_LOGS", "/tmp/autopilot-e2e-logs")
        os.makedirs(log_dir, exist_ok=True)
        path = os.path.join(log_dir, f"{self.prefix}.log")
        with open(path, "w") as f:
            for name in [f"{self.prefix}-catalog"] + [self.container(i) for i in (1, 2, 3)]:
                out = self.docker("logs", "--timestamps", name, check=False, timeout=30)
                f.write(f"===== {name}\n{out.stdout}{out.stderr}\n")
        print(f"container logs: {path}")

    def record(self, name: str, seconds: float) -> None:
        self.timings[name] = round(seconds, 3)
        print(f"{name}: {seconds:.2f} s")
        report = os.environ.get("AUTOPILOT_E2E_REPORT")
        if report:  # the figures .ci/e2e.sh prints at the end (one JSON for every module)
            import json
            try:
                with open(report) as f:
                    merged = json.loads(f.read() or "{}")
            except (OSError, ValueError):
                merged = {}
            with open(report, "w") as f:
                f.write(json.dumps(merged | self.timings, indent=2) + "\n")


def in_recovery(m: Member) -> str | None:
    """'t' on a replica, 'f' on a primary, None when the server does not answer."""
    try:
        with Postgres(m.host, m.port, timeout=2) as pg:
            return pg.value("select pg_is_in_recovery()")
    except (OSError, PgError):
        return None


def streaming_standbys(primary: Member) -> set[str]:
    """application_names the primary streams to (its pg_stat_replication)."""
    try:
        with Postgres(primary.host, primary.port, timeout=2) as pg:
            rows = pg.query("select application_name from pg_stat_replication "
                            "where state = 'streaming'")
    except (OSError, PgError):
        return set()
    return {str(r[0]) for r in rows}


def pg_name(container: str) -> str:
    """A node's application_name: its hostname (the README sets it to the container's
    name), '-' as '_'."""
    return container.replace("-", "_")


def converged(nodes: Nodes) -> tuple[Member, list[Member]] | None:
    """(primary, replicas) once exactly one node is writable, the catalog names it primary
    and it streams to both others; else None."""
    members = nodes.members()
    roles = {m.name: in_recovery(m) for m in members}
    primaries = [m for m in members if roles[m.name] == "f"]
    if len(primaries) != 1 or sorted(roles.values()) != ["f", "t", "t"]:
        return None
    primary = primaries[0]
    replicas = [m for m in members if m is not primary]
    if nodes.catalog_primary() != [primary.name]:
        return None
    if streaming_standbys(primary) != {pg_name(r.name) for r in replicas}:
        return None
    return primary, replicas


def build_images() -> None:
    """The two images, unless .ci/e2e.sh built them already (AUTOPILOT_E2E_PREBUILT=1)."""
    if os.environ.get("AUTOPILOT_E2E_PREBUILT") == "1":
        for image in IMAGES:
            assert run("docker", "image", "inspect", image, check=False).returncode == 0, (
                f"{image} missing: .ci/e2e.sh builds it (docker-compose build)")
        return
    run("images/base/build.sh", "--no-base", timeout=300)
    for image, dockerfile in IMAGES.items():
        run("docker", "build", "-q", "-f", dockerfile, "-t", image, ".", timeout=900,
            env=os.environ | {"DOCKER_BUILDKIT": "0"})


@pytest.fixture
def nodes() -> Iterator[Nodes]:
    build_images()
    n = Nodes()
    n.force_clean()  # an interrupted earlier run with the same pid
    try:
        yield n
    finally:
        n.save_logs()
        clean = n.sh("clean up", check=False)
        n.force_clean()
        left = n.leftovers()
    assert clean.returncode == 0, f"the README's clean-up block failed:\n{clean.stderr}"
    assert not left, f"left behind: {left}"


def test_readme_cluster_fails_over_on_docker_kill_and_the_old_primary_rejoins(
        nodes: Nodes) -> None:
    t0 = time.monotonic()
    nodes.sh("start")
    # one primary (PostgreSQL, the catalog and pg_stat_replication agree), two streaming
    primary, replicas = wait_for(lambda: converged(nodes), timeout=UP_BUDGET, interval=1,
                                 message="one primary streaming to two replicas")
    nodes.record("pg_image_up_s", time.monotonic() - t0)
    roles = nodes.sh("roles", timeout=60).stdout
    assert f"{primary.name} in recovery: f" in roles, roles
    for r in replicas:
        assert f"{r.name} in recovery: t" in roles, roles
    assert f"primary: postgres-{primary.name}" in roles, roles  # the service ID
    # the k8s StatefulSet runs the image as this uid/gid (runAsUser, fsGroup)
    uid = nodes.docker("exec", primary.name, "id", "-u").stdout.strip()
    sts = next(d for d in yaml.safe_load_all((ROOT / "k8s/base/postgres.yaml").read_text())
               if d and d["kind"] == "StatefulSet")
    assert int(uid) == sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"]

    # a client writes to whichever node takes writes; sync mode: every ack is on a standby
    members = nodes.members()
    create_schema(members)
    workload = Workload(members, Timeline(), max_seconds=120, op_timeout=1.0,
                        driver=PgDriver()).start()
    try:
        assert workload.wait_acks(50, timeout=30), "the client got no 50 commits"
        t_kill = time.monotonic()
        nodes.docker("kill", primary.name)  # SIGKILL: the supervisor and PostgreSQL
        wait_for(lambda: any(a.node != primary.name and a.t > t_kill
                             for a in workload.results.acks),
                 timeout=FAILOVER_BUDGET, interval=0.1, message="a new primary taking writes")
        assert workload.wait_acks(20, timeout=15, after=time.monotonic())
    finally:
        results = workload.stop()
    figures = workload.failover(t_kill, primary.name)
    nodes.record("pg_image_failover_s", figures["failover_s"] or -1)
    new = next(m for m in members if m.name == results.acks[-1].node)
    assert new.name != primary.name
    violations, counts = check_invariants(workload, [new], no_loss=True)
    assert not violations, "\n".join(violations) + "\n" + workload.timeline.format()
    assert counts["lost"] == 0 and counts["acked"] > 70, counts

    # the killed container, started again, rejoins as a replica of the new primary
    t1 = time.monotonic()
    nodes.docker("start", primary.name)
    old = Member(primary.name, nodes.ip(int(primary.name.rsplit("-", 1)[1])), 5432)
    others = {pg_name(m.name) for m in members if m.name != new.name}
    wait_for(lambda: in_recovery(old) == "t" and streaming_standbys(new) == others,
             timeout=REJOIN_BUDGET, interval=0.5,
             message=f"{old.name} streaming from the new primary {new.name}")
    seqs = [a.seq for a in results.acks]
    wait_for(lambda: not PgDriver().missing(old, seqs), timeout=15, interval=0.5,
             message=f"{old.name} holding every acknowledged commit")
    nodes.record("pg_image_rejoin_s", time.monotonic() - t1)
    assert nodes.catalog_primary() == [new.name]
    nodes.record("pg_image_test_s", time.monotonic() - t0)

"""The Redis example's hooks against a real redis-server, without an election.

What the election's contract asks of them (identity, position, detach) and the start-up
fence: a restarted node, empty or holding an AOF, is a replica of nothing, so it can neither
take writes nor be a replication source until promote makes it a master."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopilot.lab.redis import EXAMPLES
from autopilot.lab.resp import Redis, RedisError
from tests.helpers import free_port, wait_for

HOOK = EXAMPLES / "redis" / "hook.sh"

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None or
                                shutil.which("flock") is None,
                                reason="needs redis-server and flock")


class Node:
    """`hook.sh run` on a free port with its own data directory."""

    def __init__(self, base: Path, name: str, **env: str) -> None:
        self.port = free_port()
        self.dir = base / name
        self.dir.mkdir()
        self.env = {**{k: v for k, v in os.environ.items()
                       if not k.startswith(("REDIS_", "AUTOPILOT_", "CONSUL"))},
                    "REDIS_PORT": str(self.port), "REDIS_DIR": str(self.dir / "data"),
                    "REDIS_BIND": "127.0.0.1", "REDIS_HOME": str(EXAMPLES / "redis"),
                    "REDIS_HOOK_LOG": str(self.dir / "hooks.log"), **env}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Node:
        log = (self.dir / "run.log").open("ab")
        self.proc = subprocess.Popen(["sh", str(HOOK), "run"], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT)
        wait_for(lambda: self.ping(), 10, message=f"redis on {self.port}")
        return self

    def ping(self) -> bool:
        try:
            with Redis("127.0.0.1", self.port, timeout=0.5) as r:
                return r.call("PING") == "PONG"
        except (OSError, RedisError):
            return False

    def kill(self) -> None:
        """SIGKILL redis-server and its `run` loop (a crash, not a shutdown)."""
        pid = int((self.dir / "data" / "redis-server.pid").read_text())
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not self.ping(), 5, message="redis to die")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def hook(self, verb: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(HOOK), verb], env={**self.env, **env},
                              capture_output=True, text=True, timeout=20)

    def r(self) -> Redis:
        return Redis("127.0.0.1", self.port, timeout=2)

    def info(self) -> dict[str, str]:
        with self.r() as r:
            return r.info("replication")


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    made: list[Node] = []
    yield made
    for n in made:
        n.stop()


def promote(node: Node) -> None:
    res = node.hook("promote", AUTOPILOT_ROLE="primary", AUTOPILOT_LEADER_EPOCH="1",
                    REDIS_PROMOTE_MOST_RECENT="0")
    assert res.returncode == 0, res.stderr


@pytest.mark.timeout(60)
def test_a_started_node_is_a_replica_of_nothing(tmp_path: Path, nodes: list[Node]) -> None:
    a = Node(tmp_path, "a").start()
    nodes.append(a)
    info = a.info()
    assert info["role"] == "slave" and (info["master_host"], info["master_port"]) == \
        ("127.0.0.1", "0")
    with a.r() as r:
        with pytest.raises(RedisError, match="READONLY"):
            r.call("SET", "k", "v")
        # not a replication source: a replica pointed at it never syncs
        with pytest.raises(RedisError, match="NOMASTERLINK"):
            r.call("SYNC")
    promote(a)
    with a.r() as r:
        assert r.call("SET", "k", "v") == "OK"


@pytest.mark.timeout(60)
def test_identity_names_the_redis_process_and_its_history(tmp_path: Path,
                                                          nodes: list[Node]) -> None:
    a = Node(tmp_path, "a").start()
    nodes.append(a)
    first = a.hook("identity")
    assert first.returncode == 0 and ":" in first.stdout.strip()
    assert a.hook("identity").stdout == first.stdout  # stable while nothing changes
    promote(a)
    promoted = a.hook("identity").stdout
    assert promoted != first.stdout  # a promotion starts a new replication ID
    # a demote (replica of nothing) keeps the identity: an adopted primary resumes
    a.hook("demote", AUTOPILOT_ROLE="replica")
    assert a.hook("identity").stdout == promoted
    a.kill()
    a.start()
    assert a.hook("identity").stdout != promoted  # a restarted redis-server
    a.kill()
    assert a.hook("identity").returncode != 0  # no redis: no identity


@pytest.mark.timeout(60)
def test_position_and_detach(tmp_path: Path, nodes: list[Node]) -> None:
    a, b = Node(tmp_path, "a").start(), Node(tmp_path, "b").start()
    nodes += [a, b]
    assert a.hook("position").stdout.strip() == "0"
    promote(a)
    follow = b.hook("follow", AUTOPILOT_ROLE="replica", AUTOPILOT_LEADER_ADDRESS="127.0.0.1",
                    AUTOPILOT_LEADER_PORT=str(a.port), AUTOPILOT_LEADER_EPOCH="1")
    assert follow.returncode == 0, follow.stderr
    wait_for(lambda: b.info().get("master_link_status") == "up", 10, message="b to replicate a")
    with a.r() as r:
        for i in range(50):
            r.call("SET", f"k{i}", i)
    wait_for(lambda: int(b.hook("position").stdout) == int(a.hook("position").stdout),
             10, message="b to catch up")
    assert int(b.hook("position").stdout) > 0
    assert b.hook("position", REDIS_NOFAILOVER="1").returncode != 0

    det = b.hook("detach", AUTOPILOT_ROLE="replica")
    assert det.returncode == 0, det.stderr
    pos = int(b.hook("position").stdout)
    # detach reports the same position itself, as its last line (the election then need
    # not start the position hook), and nothing when `position` would refuse
    assert det.stdout.strip().splitlines()[-1] == f"position={pos}", det.stdout
    again = b.hook("detach", AUTOPILOT_ROLE="replica", REDIS_NOFAILOVER="1")
    assert again.returncode == 0 and "position=" not in again.stdout, again.stdout
    with a.r() as r:
        r.call("SET", "after-detach", 1)
        assert r.call("WAIT", 1, 300) == 0  # nobody acknowledges a write on the old primary
    assert b.info()["master_port"] == "0"
    assert int(b.hook("position").stdout) == pos  # frozen: it takes no stream any more
    with b.r() as r:
        assert r.call("GET", "k49") == "49"  # its data stays
        assert r.call("GET", "after-detach") is None
    # the most recent node is promoted; the other continues from it without a full sync
    a.hook("demote", AUTOPILOT_ROLE="replica")
    promote(b)
    f = a.hook("follow", AUTOPILOT_ROLE="replica", AUTOPILOT_LEADER_ADDRESS="127.0.0.1",
               AUTOPILOT_LEADER_PORT=str(b.port), AUTOPILOT_LEADER_EPOCH="2")
    assert f.returncode == 0, f.stderr
    wait_for(lambda: a.info().get("master_link_status") == "up", 10, message="a to replicate b")


@pytest.mark.timeout(60)
def test_a_node_restarted_with_its_aof_keeps_its_data_detached(tmp_path: Path,
                                                                nodes: list[Node]) -> None:
    a = Node(tmp_path, "a", REDIS_APPENDONLY="1").start()
    b = Node(tmp_path, "b").start()
    nodes += [a, b]
    promote(a)
    b.hook("follow", AUTOPILOT_ROLE="replica", AUTOPILOT_LEADER_ADDRESS="127.0.0.1",
           AUTOPILOT_LEADER_PORT=str(a.port), AUTOPILOT_LEADER_EPOCH="1")
    wait_for(lambda: b.info().get("master_link_status") == "up", 10, message="b to replicate a")
    with a.r() as r:
        for i in range(100):
            r.call("SET", f"k{i}", i)
    wait_for(lambda: b.hook("position").stdout == a.hook("position").stdout, 10,
             message="b to catch up")
    before = int(a.hook("position").stdout)
    time.sleep(1.2)  # appendfsync everysec (SIGKILL keeps the page cache anyway)
    a.kill()
    a.start()
    with a.r() as r:
        assert r.call("GET", "k99") == "99"  # the data came back from the AOF
        assert "role:slave" in r.call("INFO", "replication")
        with pytest.raises(RedisError, match="NOMASTERLINK"):
            r.call("SYNC")
    # ... but its history did not: a new replication ID at offset 0, the lowest position,
    # so the election prefers any replica that kept following
    assert int(a.hook("position").stdout) < before <= int(b.hook("position").stdout)
    # b still points at it (no election here): it reconnects but cannot sync, and keeps
    # its data instead of taking the restarted node's
    wait_for(lambda: "NOMASTERLINK" in (b.dir / "run.log").read_text(), 10,
             message="b's sync attempt to be refused")
    assert b.info()["master_link_status"] == "down"
    with b.r() as r:
        assert r.call("DBSIZE") == 100


@pytest.mark.timeout(60)
def test_checks_and_hooks_that_predate_a_transition_do_not_undo_it(tmp_path: Path,
                                                                   nodes: list[Node]) -> None:
    a, b = Node(tmp_path, "a").start(), Node(tmp_path, "b").start()
    nodes += [a, b]
    primary_env = {"AUTOPILOT_ROLE": "primary", "AUTOPILOT_LEADER_EPOCH": "1"}
    promote(a)
    assert a.hook("health", **primary_env).returncode == 0
    # a check started before the step-down still says primary: it must not fail the
    # session (a lock-delay instead of a clean release), the demote marked the node
    a.hook("demote", AUTOPILOT_ROLE="replica")
    res = a.hook("health", **primary_env)
    assert res.returncode == 0 and "stepping down" in res.stdout, res.stdout
    # ...but a primary whose redis-server restarted under it fails its check at once
    a.kill()
    a.start()
    res = a.hook("health", **primary_env)
    assert res.returncode == 1, (res.stdout, (a.dir / "data" / "autopilot-role").read_text(),
                                 a.info())

    # a follower detached when the lock left leader `a` (epoch 1): a follow hook or check
    # carrying that old leader must not re-attach it to the deposed primary
    old_leader = {"AUTOPILOT_ROLE": "replica", "AUTOPILOT_LEADER_ADDRESS": "127.0.0.1",
                  "AUTOPILOT_LEADER_PORT": str(a.port), "AUTOPILOT_LEADER_EPOCH": "1"}
    assert b.hook("follow", **old_leader).returncode == 0
    wait_for(lambda: b.info()["master_port"] == str(a.port), 5, message="b to follow a")
    assert b.hook("detach", AUTOPILOT_ROLE="replica").returncode == 0
    assert b.info()["master_port"] == "0"
    b.hook("follow", **old_leader)
    b.hook("health", **old_leader)
    assert b.info()["master_port"] == "0", "a stale hook re-attached the detached follower"
    # the next leader (a higher epoch) is followed
    assert b.hook("follow", **{**old_leader, "AUTOPILOT_LEADER_EPOCH": "2"}).returncode == 0
    assert b.info()["master_port"] == str(a.port)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("no_loss", [False, True])
def test_promote_refuses_while_a_surveyed_replica_is_ahead(tmp_path: Path, nodes: list[Node],
                                                           no_loss: bool) -> None:
    """The promote hook's own check (for a peer whose candidacy the election did not see):
    it surveys the peers listed in `$REDIS_DIR/peers` and refuses, leaving the node a
    fenced replica, while one is further ahead than the slack (no-loss: a replication
    PING's 14 bytes; async: REDIS_MAX_LAG). Its survey files do not outlive the hook."""
    mode = {"REDIS_NO_LOSS": "1" if no_loss else "0", "REDIS_MAX_LAG": "100"}
    a, b, c = (Node(tmp_path, n, **mode).start() for n in ("a", "b", "c"))
    nodes += [a, b, c]
    promote(a)
    f = b.hook("follow", AUTOPILOT_ROLE="replica", AUTOPILOT_LEADER_ADDRESS="127.0.0.1",
               AUTOPILOT_LEADER_PORT=str(a.port), AUTOPILOT_LEADER_EPOCH="1")
    assert f.returncode == 0, f.stderr
    wait_for(lambda: b.info().get("master_link_status") == "up", 10, message="b to replicate a")

    def written(i: int) -> bool:  # no-loss: a counts b as a good replica after its first ack
        try:
            with a.r() as r:
                return r.call("SET", f"k{i}", "x" * 20) == "OK"
        except RedisError:
            return False

    for i in range(20):
        wait_for(lambda i=i: written(i), 10, message=f"write {i} on a")
    wait_for(lambda: int(b.hook("position").stdout) == int(a.hook("position").stdout),
             10, message="b to catch up")
    assert b.hook("detach", AUTOPILOT_ROLE="replica").returncode == 0
    (c.dir / "data" / "peers").write_text(f"127.0.0.1 {b.port}\n127.0.0.1 {c.port}\n")
    env = {"AUTOPILOT_ROLE": "primary", "AUTOPILOT_LEADER_EPOCH": "2",
           "AUTOPILOT_REDIS_IP": "127.0.0.1"}
    res = c.hook("promote", **env)
    assert res.returncode != 0 and "not promoting" in res.stderr, (res.stdout, res.stderr)
    assert c.info()["role"] == "slave", "promoted although a replica was ahead"
    assert not list((c.dir / "data").glob("survey.*")), "survey files left behind"
    # the replica that is ahead may be promoted (c, behind, is no obstacle)
    (b.dir / "data" / "peers").write_text(f"127.0.0.1 {c.port}\n")
    ok = b.hook("promote", **env)
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    assert b.info()["role"] == "master"


@pytest.mark.timeout(60)
def test_position_of_live_and_of_aof_restored_data(tmp_path: Path, nodes: list[Node]) -> None:
    """Data in a live history: 2^40 + its offset. The health check records the history's
    replid and offset next to the AOF; restarted from the AOF (offset 0, a new replid) the
    node's position is that recorded offset: below any live history, above an empty node."""
    live = 1 << 40
    a, b = Node(tmp_path, "a", REDIS_APPENDONLY="1").start(), Node(tmp_path, "b").start()
    nodes += [a, b]
    assert a.hook("position").stdout.strip() == "0"  # nothing yet
    promote(a)
    # (a master's offset moves only once it has a replica: Redis creates its backlog then)
    f = b.hook("follow", AUTOPILOT_ROLE="replica", AUTOPILOT_LEADER_ADDRESS="127.0.0.1",
               AUTOPILOT_LEADER_PORT=str(a.port), AUTOPILOT_LEADER_EPOCH="1")
    assert f.returncode == 0, f.stderr
    wait_for(lambda: b.info().get("master_link_status") == "up", 10, message="b to replicate a")
    with a.r() as r:
        for i in range(30):
            r.call("SET", f"k{i}", i)
    offset = int(a.info()["master_repl_offset"])
    pos = int(a.hook("position").stdout)
    assert live + offset <= pos <= live + int(a.info()["master_repl_offset"]), pos
    check = a.hook("health", AUTOPILOT_ROLE="primary", AUTOPILOT_LEADER_EPOCH="1")
    assert check.returncode == 0, check.stdout
    replid, now = a.info()["master_replid"], int(a.info()["master_repl_offset"])
    rec_replid, rec = (a.dir / "data" / "position").read_text().split()
    # (replication PINGs move the offset by 14 bytes a second meanwhile)
    assert rec_replid == replid and offset <= int(rec) <= now, (rec_replid, rec, offset, now)
    offset = int(rec)
    a.kill()
    a.start()
    wait_for(lambda: a.info().get("master_repl_offset") == "0", 10,
             message="a restarted at offset 0")
    with a.r() as r:
        assert r.call("GET", "k29") == "29"  # its AOF's data
    assert int(a.hook("position").stdout) == offset
    det = a.hook("detach", AUTOPILOT_ROLE="replica")
    assert det.stdout.strip().splitlines()[-1] == f"position={offset}", det.stdout
    # without an AOF the data is gone: the record does not count
    assert a.hook("position", REDIS_APPENDONLY="0").stdout.strip() == "0"

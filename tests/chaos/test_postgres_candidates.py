"""Who may become the primary, with real lag (docs/postgres.md): `nofailover`, a replica
ahead of the winner, and `maximumLagOnFailover` (two scenarios sharing one async 3-node
PostgreSQL 15 lab), and who may count as synchronous: a standby whose history forked off
the primary's never enters the sync set (a sync-mode lab).

Lag is made for real: one replica's link to the primary is cut (iptables in its network
namespace: the WAL written from then on reaches the other replica only, and a reconnect
cannot fetch it); the best candidate's supervisor is frozen right after it posted its
candidacy (a candidate that is live and the best, but does not take the lock).
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import requests

from autopilot.lab.cluster import Lab
from autopilot.lab.pgwire import PgError, Postgres
from autopilot.lab.postgres import BIN, EXAMPLES, RUN_AS
from tests.chaos.postgres_scenario import FAILOVER_BUDGET, PgScenario, hooks_log, pg_lab
from tests.helpers import holds, wait_for

pytestmark = pytest.mark.chaos


def cut_link(lab: Lab, replica: str, primary: str) -> None:
    """Drop everything between `replica` and `primary` (rules in the replica's namespace,
    gone with it at teardown); the catalog and the clients still reach both."""
    ip = lab.node(primary).ip
    n = lab.node(replica).n
    lab.net.in_ns(n, "iptables", "-A", "INPUT", "-s", ip, "-j", "DROP")
    lab.net.in_ns(n, "iptables", "-A", "OUTPUT", "-d", ip, "-j", "DROP")


def signal_procs(procs: list[psutil.Process], sig: int) -> int:
    n = 0
    for p in procs:
        try:
            p.send_signal(sig)
            n += 1
        except psutil.Error:
            pass
    return n


def value(lab: Lab, node: str, sql: str) -> str | None:
    n = lab.node(node)
    try:
        with Postgres(n.ip, n.port, timeout=3) as pg:
            return pg.value(sql)
    except (OSError, PgError):
        return None


def start_with(lab: Lab, node: str, **env: str) -> None:
    """Start one node's supervisor with extra environment (the lab's env is shared by
    every node: it is set for this one start only)."""
    saved = dict(lab.state.env)
    lab.state.env.update(env)
    try:
        lab.start(node)
    finally:
        lab.state.env.clear()
        lab.state.env.update(saved)
        lab.save()


def autopilot_log(lab: Lab, node: str) -> str:
    try:
        with open(f"{lab.node(node).dir}/autopilot.log", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def best_posted(lab: Lab, service_id: str, epoch: int) -> bool:
    """`service_id` has a live candidacy post for the round after leader epoch `epoch`."""
    try:
        r = requests.get(f"{lab.catalog_url}/v1/kv/service/postgres/leader/candidates/"
                         f"{service_id}", timeout=1)
    except requests.RequestException:
        return False
    if r.status_code != 200:
        return False
    entry = r.json()[0]
    post = json.loads(base64.b64decode(entry.get("Value") or b"") or b"{}")
    return bool(entry.get("Session")) and post.get("eligible", True) and \
        int(post.get("epoch_seen", -1)) >= epoch


class CheckKeeper:
    """Passes a node's TTL check in the catalog every 0.5 s, as its frozen supervisor
    would: its session stays bound to a passing check (until the session's own TTL)."""

    def __init__(self, lab: Lab, service_id: str) -> None:
        self.url = f"{lab.catalog_url}/v1/agent/check/pass/service:{service_id}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                requests.put(self.url, timeout=1)
            except requests.RequestException:
                pass
            self.stop.wait(0.5)

    def __enter__(self) -> CheckKeeper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(2)


@pytest.mark.timeout(900)
def test_pg_who_may_be_promoted_lagging_then_nofailover(lab_factory) -> None:
    """Two scenarios on one async lab (one lab start, ~20-60 s, less in CI): they compose,
    the first ends with its old primary dead, which the second starts again as its
    `nofailover` node. maximumLagOnFailover is 64 KiB and the lock-delay 3 s throughout."""
    lab = pg_lab(lab_factory, env={"PG_MAXIMUM_LAG_ON_FAILOVER": "65536",
                                   "AP_LOCK_DELAY": "3s"})
    old, lagging = lagging_replica_stays_out_while_a_better_candidate_is_live(lab)
    uncut_link(lab, lagging, old)
    primary = lab.primaries()[0]
    with Postgres(lab.node(primary).ip, lab.node(primary).port, timeout=30) as pg:
        pg.query("drop table w, probe")  # the next workload numbers its writes from 1
    nofailover_replica_ahead_of_the_winner_rewinds_and_never_promotes(lab, nf=old)


def lagging_replica_stays_out_while_a_better_candidate_is_live(lab: Lab) -> tuple[str, str]:
    """Async mode, maximumLagOnFailover 64 KiB. One replica lags ~1 MB behind the other when
    the primary is SIGKILLed. The better one posts its candidacy, then its supervisor
    freezes before it can take the lock (SIGSTOP; its post stays live while its check
    passes, which the test keeps passing, up to its session TTL of 10 s). Without the limit
    the lagging one would run candidacyTimeout x 2 = 4 s into the round ("did not take the
    lock in time"); with it, it stays out while the better post is live. The better one
    resumes and the cluster converges. Returns (the old primary, the lagging replica)."""
    sc = PgScenario(lab).start()
    old = sc.primary()
    best, lagging = sorted(n.name for n in lab.state.nodes.values() if n.name != old)
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 20, "writes before the fault")

    cut_link(lab, lagging, old)
    sc.timeline.add("FAULT", f"link {old} - {lagging} cut")
    n = lab.node(old)
    with Postgres(n.ip, n.port, timeout=30) as pg:  # ~1 MB of WAL the lagging one lacks
        pg.query("create table pad as select g, repeat('x', 500) as v "
                 "from generate_series(1, 2000) g")
        lsn = pg.value("select pg_current_wal_lsn()")
    sc.wait(lambda: value(lab, best, f"select pg_last_wal_receive_lsn() >= '{lsn}'") == "t",
            20, f"{best} receiving the padding")
    behind = value(lab, lagging, f"select pg_wal_lsn_diff('{lsn}', "
                                 "pg_last_wal_receive_lsn())::bigint")
    assert behind is not None and int(behind) > 65536, behind

    leader = lab.leader()
    assert leader is not None
    sc.killed.add(old)
    t = sc.fault(f"SIGKILL {old}", lab.kill, old)
    sc.wait(lambda: best_posted(lab, f"postgres-{best}", int(leader["epoch"])), 40,
            f"{best} posting its candidacy")
    sup = lab.supervisor(lab.node(best))
    assert sup is not None
    with CheckKeeper(lab, f"postgres-{best}"):
        sup.send_signal(signal.SIGSTOP)
        sc.timeline.add("FAULT", f"supervisor of {best} frozen after posting")
        try:
            holds(lambda: lagging not in lab.primaries(), 7,
                  message=f"the lagging {lagging} staying out while {best}'s post is live")
            log = autopilot_log(lab, lagging)
            assert "ahead by more than maximumLagOnFailover" in log, log[-3000:]
            assert "did not take the lock in time" not in log
        finally:
            sup.send_signal(signal.SIGCONT)
            sc.timeline.add("heal", f"supervisor of {best} resumed")
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], 60,
            "a new primary accepting writes")
    figures = sc.finish(converge_timeout=120)
    for line in autopilot_log(lab, lagging).splitlines():
        if "candidacy run=" in line:
            print(f"FIGURE {lagging}: {line[:200]}")
    print(f"FIGURE pg maximumLagOnFailover winner {sc.workload.current} {figures}")
    return old, lagging


def nofailover_replica_ahead_of_the_winner_rewinds_and_never_promotes(lab: Lab, nf: str
                                                                      ) -> None:
    """Async mode. A `nofailover` replica (`nf`, started again with PG_NOFAILOVER: it was
    the primary SIGKILLed in the scenario before, so it rejoins through pg_rewind) holds WAL
    the other replica never received when the primary is SIGKILLed: the other one is
    promoted (the nofailover one is not a candidate), and the nofailover one, ahead of the
    winner, does not diverge silently: it is rewound onto the new primary and follows it,
    without the rows only it had. Then it is the only node left: it stays a read-only
    replica, nobody is promoted; once the primary comes back it follows it again."""
    start_with(lab, nf, PG_NOFAILOVER="1")
    old = next(r["node"] for r in lab.wait_converged(120) if r["role"] == "primary")
    (other,) = [n.name for n in lab.state.nodes.values() if n.name not in (old, nf)]
    wait_for(lambda: "nofailover" in lab.catalog_entries().get(
        lab.node(nf).address, {}).get("tags", []), 30, message=f"{nf} tagged nofailover")
    sc = PgScenario(lab).start()
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 20, "writes before the fault")

    # WAL that `other` never receives, `nf` does
    cut_link(lab, other, old)
    sc.timeline.add("FAULT", f"link {old} - {other} cut")
    after = time.monotonic()
    sc.wait(lambda: sc.workload.wait_acks(30, 0.1, after=after), 10,
            "writes the other replica does not receive")
    top = max(a.seq for a in sc.workload.results.acks if a.node == old)
    sc.wait(lambda: value(lab, nf, f"select count(*) from w where seq = {top}") == "1", 10,
            f"the nofailover replica {nf} holding seq {top}")
    assert value(lab, other, f"select count(*) from w where seq = {top}") == "0"

    mark = len(hooks_log(lab, nf))  # (its log holds its rejoin and its earlier promotion)
    sc.killed.add(old)
    t = sc.fault(f"SIGKILL {old}", lab.kill, old)
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], FAILOVER_BUDGET + 10,
            "a new primary accepting writes")
    assert sc.workload.current == other, sc.timeline.format()
    rows = sc.lab.wait_converged(90)  # nf follows other: only after a rewind
    assert next(r for r in rows if r["node"] == nf)["role"] == "replica"
    log = hooks_log(lab, nf)[mark:]
    assert "rewinding" in log and "pg_rewind from" in log, log
    assert "promoted" not in log, log
    assert value(lab, nf, f"select count(*) from w where seq = {top}") == "0", \
        "the rows only the nofailover replica had must be gone after the rewind"

    # the nofailover node alone: never promoted, read-only (a promotion would come within
    # the check TTL (3 s) + the lock-delay (3 s) + a candidacy round: twice that here)
    sc.killed.add(other)
    sc.fault(f"SIGKILL {other} (the nofailover node is alone)", lab.kill, other)
    holds(lambda: lab.primaries() == [] and value(lab, nf, "select pg_is_in_recovery()") == "t",
          12, message=f"{nf} staying a read-only replica")
    assert lab.leader() is None, lab.leader()
    assert "promoted" not in hooks_log(lab, nf)[mark:]
    # the primary comes back: it wins (it has the data) and nf follows it again
    sc.fault(f"restart {other}", lab.start, other)
    sc.killed.discard(other)
    figures = sc.finish(converge_timeout=120)
    assert sc.workload.current == other
    print(f"FIGURE pg nofailover ahead replica {figures}")


def uncut_link(lab: Lab, replica: str, primary: str) -> None:
    """Undo cut_link."""
    ip = lab.node(primary).ip
    n = lab.node(replica).n
    lab.net.in_ns(n, "iptables", "-D", "INPUT", "-s", ip, "-j", "DROP")
    lab.net.in_ns(n, "iptables", "-D", "OUTPUT", "-d", ip, "-j", "DROP")


# A standby's CopyDone ('c', length 4): the message that ends a pass over a timeline
COPY_DONE = ["-p", "tcp", "-m", "string", "--algo", "bm", "--hex-string", "|6300000004|",
             "-j", "DROP"]


def sync_record(lab: Lab) -> dict:
    try:
        r = requests.get(f"{lab.catalog_url}/v1/kv/service/postgres/sync?raw", timeout=2)
        return r.json() if r.status_code == 200 else {}
    except (requests.RequestException, ValueError):
        return {}


@pytest.mark.timeout(600)
def test_pg_forked_standby_never_enters_the_sync_set(lab_factory) -> None:
    """Sync mode. The old primary wrote WAL no replica received (synchronous_commit =
    local, its link to the only streaming replica cut; the third node stopped) and was
    SIGKILLed; that replica was promoted. Before any rewind the old primary's server comes
    back as a standby of the new primary (what a promote hook may do to a member in
    recovery whose check passes; here started by hand, its supervisor stays dead). Its
    history forked off the new primary's: it streams the old timeline up to the fork again
    and again, and the new primary's walsender shows it `streaming` at the end of each
    pass, reporting a flush position of the forked timeline, past what it was sent. The
    pass lasts until its CopyDone arrives, here never (dropped on its link, as a lossy link
    would delay it): the walsender times out and the standby connects again. Whether a pass
    shows the forked flush position depends on which of the standby's replies got through
    before the drop, so the test counts the looks that show it; a standby that misses the
    walsender's end has its walreceiver ended, so passes go on.

    1. The new primary's first synchronous_standby_names (set by its promote hook, before
       any standby proved anything) must not name it: its flush position would release
       the first commits, living on the new primary alone. With no other member proven
       on the new primary's history, the first commit waits (strict) until one is: the
       stopped node starts again, streams, and the commit is acknowledged with that node
       holding it. (Before the promote hook left unproven members out, it named every
       other member: the forked standby acknowledged the first commit at once.)
    2. The sync job must not take it for a synchronous standby either: it is never in
       synchronous_standby_names nor in the published sync set (so never promotable as
       synchronous) while a proven standby streams beside it."""
    lab = pg_lab(lab_factory, no_loss=True)
    old = next(r["node"] for r in lab.wait_converged(30) if r["role"] == "primary")
    new, other = sorted(n.name for n in lab.state.nodes.values() if n.name != old)
    new_name, other_name, old_name = (x.replace("-", "_") for x in (new, other, old))
    lab.stop(other, 45.0)  # the new primary's only other member: the forked old primary
    wait_for(lambda: sync_record(lab).get("sync") == [new_name], 30,
             message=f"the old primary's sync set down to {new_name}")
    o = lab.node(old)
    with Postgres(o.ip, o.port, timeout=30) as pg:
        pg.query("select pg_switch_wal()")  # the fork and the forked WAL in one segment
        pg.query("create table forked (x int)")  # (acknowledged by a standby)
        lsn = pg.value("select pg_current_wal_lsn()")
    wait_for(lambda: value(lab, new, f"select pg_last_wal_receive_lsn() >= '{lsn}'") == "t",
             20, message=f"{new} receiving everything so far")
    cut_link(lab, new, old)
    with Postgres(o.ip, o.port, timeout=30) as pg:  # WAL only the old primary has
        pg.query("set synchronous_commit = local")
        pg.query("insert into forked select generate_series(1, 20000)")
        forked_end = pg.value("select pg_current_wal_lsn()")
    lab.kill(old)
    wait_for(lambda: lab.primaries() == [new], FAILOVER_BUDGET + 15,
             message=f"{new} promoted")
    # only now: the killed primary's kernel still retransmits the WAL queued on its
    # replication connection, and a link healed before the promotion let it through (the
    # replica then held every forked row: no fork, no hazard)
    uncut_link(lab, new, old)
    assert value(lab, new, "select count(*) from forked") == "0", \
        f"{new} received the WAL written while its link was cut: no fork to test"

    # the old primary's server, unrewound, as a standby of the new primary
    p = lab.node(new)
    pgdata = f"{o.dir}/data/pgdata"
    lab.net.in_ns(o.n, "iptables", "-A", "OUTPUT", "-d", p.ip, *COPY_DONE)
    with open(f"{pgdata}/postgresql.auto.conf", "a") as f:
        f.write(f"primary_conninfo = 'host={p.ip} port={p.port} user=postgres "
                f"application_name={old_name}'\nprimary_slot_name = ''\n")
    open(f"{pgdata}/standby.signal", "w").close()
    Path(f"{pgdata}/postmaster.pid").unlink(missing_ok=True)  # the killed server's
    home = EXAMPLES / "postgres"
    as_pg = ["setpriv", f"--reuid={RUN_AS}", f"--regid={RUN_AS}", "--init-groups", "--"]
    ctl = [*as_pg, str(BIN / "pg_ctl"), "-D", pgdata]
    subprocess.run(["chown", f"{RUN_AS}:", f"{pgdata}/standby.signal"], check=True)
    lab.net.in_ns(o.n, *ctl, "-l", f"{o.dir}/forked.log", "-w", "-t", "60", "-o",
                  f"-c config_file={home}/postgresql.conf -c hba_file={o.dir}/data/pg_hba.conf "
                  f"-c port={o.port} -c listen_addresses='*'", "start")
    try:
        row = f"""select state, sent_lsn, flush_lsn from pg_stat_replication
                  where application_name = '{old_name}'"""

        def forked_streaming() -> bool:
            got = value(lab, new, f"select count(*) from ({row}) s where state = 'streaming' "
                                  "and flush_lsn > sent_lsn")
            return got is not None and int(got) > 0

        def connected() -> bool:
            return value(lab, new, f"select count(*) from ({row}) s") not in (None, "0")

        def kick() -> None:
            """End the forked standby's walreceiver (the startup process starts another at
            once). Once in a while its end of a pass never learns that the walsender timed
            out (its CopyDone, dropped, still waits for retransmission) and it stays away."""
            with open(f"{pgdata}/postmaster.pid") as f:
                postmaster = psutil.Process(int(f.readline()))
            for child in postmaster.children():
                if "walreceiver" in " ".join(child.cmdline()):
                    print(f"{old}: no pass for 2 s; its walreceiver {child.pid} ended")
                    child.send_signal(signal.SIGTERM)

        def watch(check: Callable[[], object], at_least: float, shown_needed: int,
                  deadline: float, what: str) -> tuple[int, int]:
            """Run ``check`` (it asserts the property) every 0.1 s for at least
            ``at_least`` seconds and until the forked standby was shown streaming with its
            forked flush position in ``shown_needed`` looks. That it is shown depends on
            which of its replies got through before its CopyDone was dropped, pass by pass
            (one in 5 s): so count the looks that matter instead of a share of a fixed
            window."""
            start = time.monotonic()
            shown = looks = 0
            away_since: float | None = None
            while True:
                check()
                looks += 1
                now = time.monotonic()
                if forked_streaming():
                    shown += 1
                    away_since = None
                elif connected():
                    away_since = None
                elif away_since is None:
                    away_since = now
                elif now - away_since > 2.0:
                    kick()
                    away_since = None
                if now - start >= at_least and shown >= shown_needed:
                    return shown, looks
                if now - start > deadline:
                    raise AssertionError(f"{what}: {old} shown streaming to {new} in only "
                                         f"{shown} of {looks} looks in {deadline}s")
                time.sleep(0.1)

        # the hazard is there: shown streaming, with a flush position it was never sent
        watch(lambda: None, 0.0, 1, 60.0, "the forked standby connecting")
        assert value(lab, old, "select pg_last_wal_replay_lsn() >= "
                               f"'{forked_end}'") == "t", "the standby is not the forked one"

        def outside() -> bool:
            names = value(lab, new, "show synchronous_standby_names") or ""
            return old_name not in names and old_name not in sync_record(lab).get("sync", [])

        # 1. the first commit on the new primary: only the forked standby is connected
        acked = threading.Event()
        failed: list[BaseException] = []

        def first_commit() -> None:
            try:
                with Postgres(p.ip, p.port, timeout=240) as pg:
                    pg.query("insert into forked values (-1)")
                acked.set()
            except (OSError, PgError) as exc:
                failed.append(exc)
        threading.Thread(target=first_commit, daemon=True).start()

        def waiting() -> None:
            if acked.is_set() or failed:
                what = (f"failed: {failed}" if failed else
                        f"was acknowledged with only {new} holding it (synchronous_standby_names"
                        f" {value(lab, new, 'show synchronous_standby_names')}, published "
                        f"{sync_record(lab)})")
                raise AssertionError(f"the first commit on {new} {what}")
        # at least 3 s, and a second of looks with the hazard shown (several if need be)
        watch(waiting, 3.0, 10, 60.0, "the first commit waiting")
        assert outside(), f"{old} named synchronous: {sync_record(lab)}"
        # a proven standby comes: it acknowledges the commit, and holds it
        lab.start(other)
        wait_for(lambda: acked.is_set() or failed, 120,
                 message=f"the first commit acknowledged once {other} streams")
        assert not failed, failed
        assert value(lab, other, "select count(*) from forked where x = -1") == "1"
        wait_for(lambda: sync_record(lab).get("sync") == [other_name]
                 and value(lab, new, "show synchronous_standby_names")
                 == f'ANY 1 ("{other_name}")', 30,
                 message=f"the new primary's sync set: {other_name}")

        # 2. the sync job runs every second: at least six of its runs, three seconds of
        # them with the forked standby shown streaming with its forked flush position
        def still_outside() -> None:
            assert outside(), f"{old} entered the sync set: {sync_record(lab)}"
        watch(still_outside, 6.0, 30, 60.0, f"{old} outside the sync set")
        assert sync_record(lab).get("sync") == [other_name], sync_record(lab)
    finally:
        lab.net.in_ns(o.n, *ctl, "-m", "immediate", "-w", "stop", check=False)
        lab.net.in_ns(o.n, "iptables", "-D", "OUTPUT", "-d", p.ip, *COPY_DONE, check=False)

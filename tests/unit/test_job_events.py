"""Job state machine: triggers, event order, restarts, backoff, periodic runs, timeouts.

Real processes on a real loop (tests/unit/job_harness.py); no Consul, no control."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from autopilot.config.model import UNLIMITED, BackoffConfig, JobConfig, WhenConfig
from autopilot.events import GLOBAL, SIGNAL, Event
from autopilot.jobs.trigger import Trigger
from tests.helpers import stays
from tests.unit.job_harness import Harness, run, until

pytestmark = pytest.mark.timeout(30)


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def test_trigger_defaults_and_matching() -> None:
    t = Trigger(JobConfig(name="a"))
    assert t.on_startup and t.match(Event("startup", GLOBAL)) == GLOBAL
    assert t.match(Event("startup", "b")) is None
    t = Trigger(JobConfig(name="a", when=WhenConfig(source=["b"], once="exitSuccess")))
    assert t.match(Event("exitSuccess", "b")) == "b"
    assert t.match(Event("exitFailed", "b")) is None and not t.each
    t = Trigger(JobConfig(name="a", when=WhenConfig(source=["SIGHUP"], each=SIGNAL)))
    assert t.each and t.match(Event(SIGNAL, "SIGHUP")) == "SIGHUP"
    assert t.match(Event(SIGNAL, "SIGUSR2")) is None
    t = Trigger(JobConfig(name="a", when=WhenConfig(source=["b"])))  # never fires, as CP
    assert t.match(Event("exitSuccess", "b")) is None


def test_once_job_event_sequence() -> None:
    async def main() -> None:
        async with Harness([JobConfig(name="a", exec=sh("exit 0"))]) as h:
            await h.wait_event("stopped", "a")
            assert h.events("a") == ["exitSuccess:a", "stopping:a", "stopped:a"]
            assert h.job("a").status == "stopped" and h.job("a").runs == 1
            assert h.job("a").last_exit == 0
            # every job completed on its own: the supervisor exits with 0
            assert await h.exited() == 0
    run(main)


def test_chain_and_exit_failed_hook() -> None:
    jobs = [
        JobConfig(name="pre", exec=sh("exit 4")),
        JobConfig(name="onfail", exec=sh("true"),
                  when=WhenConfig(source=["pre"], once="exitFailed")),
        JobConfig(name="onok", exec=sh("true"),
                  when=WhenConfig(source=["pre"], once="exitSuccess")),
    ]

    async def main() -> None:
        async with Harness(jobs) as h:
            await h.wait_event("exitSuccess", "onfail")
            # everything that can still run has run: exit with the failed job's status
            assert await h.exited() == 4
            assert h.count("exitSuccess", "onok") == 0
            assert h.job("onok").runs == 0
    run(main)


def test_restarts_count_and_backoff() -> None:
    job = JobConfig(name="a", exec=sh("date +%s.%N >> \"$OUT\"; exit 1"), restarts=3,
                    backoff=BackoffConfig(initial=0.2, max=0.3), env={})

    async def main(out: str) -> None:
        job.env = {"OUT": out}
        async with Harness([job]) as h:
            await h.wait_event("stopped", "a", timeout=8)
            assert h.count("exitFailed", "a") == 4
            assert h.job("a").runs == 4 and h.job("a").restarts == 3
        stamps = [float(x) for x in open(out).read().split()]
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        assert len(gaps) == 3
        # 0.2, then doubled to 0.4 but capped at 0.3, then 0.3
        assert gaps[0] >= 0.18 and gaps[1] >= 0.28 and gaps[2] >= 0.28, gaps
        assert max(gaps) < 1.5, gaps

    out = f"/tmp/ap-test-restarts-{os.getpid()}"
    try:
        run(lambda: main(out))
    finally:
        if os.path.exists(out):
            os.unlink(out)


def test_unlimited_restarts_stop_on_shutdown() -> None:
    async def main() -> None:
        async with Harness([JobConfig(name="a", exec=sh("exit 0"), restarts=UNLIMITED,
                                      backoff=BackoffConfig(initial=0.05, max=0.05))]) as h:
            await h.wait_event("exitSuccess", "a", count=3)
            assert await h.stop() == 0
            assert h.job("a").done
    run(main)


def test_periodic_runs_restarts_plus_one() -> None:
    job = JobConfig(name="tick", exec=["true"], when=WhenConfig(interval=0.15), restarts=3,
                    timeout=0.15)

    async def main() -> None:
        async with Harness([job]) as h:
            await h.wait_event("stopped", "tick", timeout=5)
            assert h.count("exitSuccess", "tick") == 4
            assert h.job("tick").runs == 4
    run(main)


@pytest.mark.timing
def test_periodic_timeout_kills_overrun() -> None:
    job = JobConfig(name="slow", exec=["sleep", "5"], when=WhenConfig(interval=0.2),
                    restarts=1, timeout=0.2)

    async def main() -> None:
        async with Harness([job]) as h:
            t0 = time.monotonic()
            await h.wait_event("stopped", "slow", timeout=5)
            assert time.monotonic() - t0 < 3
            assert h.count("exitFailed", "slow") == 2  # each run killed at its timeout
            assert h.job("slow").last_exit == 137
    run(main)


def test_periodic_explicit_timeout_longer_than_interval_lets_the_run_finish() -> None:
    # a run may outlive the interval when its explicit timeout allows it: the ticks that find
    # it still running are skipped, and the run ends on its own (exit 0), not at the next tick
    job = JobConfig(name="long", exec=["sleep", "0.5"], when=WhenConfig(interval=0.1),
                    restarts=1, timeout=5.0)

    async def main() -> None:
        async with Harness([job]) as h:
            await h.wait_event("stopped", "long", timeout=10)
            assert h.count("exitSuccess", "long") == 2
            assert h.count("exitFailed", "long") == 0
            assert h.job("long").last_exit == 0
    run(main)


def test_exec_timeout_kills_the_group() -> None:
    async def main(pidfile: str) -> None:
        job = JobConfig(name="a", exec=sh(f"sleep 30 & echo $! > {pidfile}; sleep 30"),
                        timeout=0.3)
        async with Harness([job]) as h:
            await h.wait_event("exitFailed", "a", timeout=5)
            assert h.job("a").last_exit == 137
            bg = int(open(pidfile).read())
            await until(lambda: not _alive(bg), 3, "background child killed with the group")

    pidfile = f"/tmp/ap-test-timeout-{os.getpid()}"
    run(lambda: main(pidfile))
    os.unlink(pidfile)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_each_trigger_and_signal_source() -> None:
    jobs = [
        JobConfig(name="hup", exec=["true"], when=WhenConfig(source=["SIGHUP"], each=SIGNAL)),
        JobConfig(name="svc", health=None, exec=["sleep", "30"]),
        JobConfig(name="onhealthy", exec=["true"], when=WhenConfig(source=["hup"],
                                                                   each="exitSuccess")),
    ]

    async def main() -> None:
        async with Harness(jobs) as h:
            for i in range(1, 4):
                h.bus.publish(Event(SIGNAL, "SIGHUP"))
                await h.wait_event("exitSuccess", "onhealthy", count=i)
            h.bus.publish(Event(SIGNAL, "SIGUSR2"))
            await stays(lambda: h.job("hup").runs == 3 and not h.job("hup").done, 0.2,
                        "`each` jobs stay armed")
    run(main)


def test_source_list_any_and_all() -> None:
    jobs = [
        JobConfig(name="a", exec=["true"], when=WhenConfig(source=["SIGHUP"], each=SIGNAL)),
        JobConfig(name="b", exec=["true"], when=WhenConfig(source=["SIGUSR2"], each=SIGNAL)),
        JobConfig(name="any", exec=["true"],
                  when=WhenConfig(source=["a", "b"], each="exitSuccess")),
        JobConfig(name="all", exec=["true"],
                  when=WhenConfig(source=["a", "b"], each="exitSuccess", source_mode="all")),
    ]

    async def main() -> None:
        async with Harness(jobs) as h:
            h.bus.publish(Event(SIGNAL, "SIGHUP"))
            await h.wait_event("exitSuccess", "any")
            await stays(lambda: h.count("exitSuccess", "all") == 0, 0.2, "only a so far")
            h.bus.publish(Event(SIGNAL, "SIGHUP"))
            await h.wait_event("exitSuccess", "any", count=2)
            h.bus.publish(Event(SIGNAL, "SIGUSR2"))
            await h.wait_event("exitSuccess", "all")
            await h.wait_event("exitSuccess", "any", count=3)
            await stays(lambda: h.count("exitSuccess", "all") == 1, 0.2, "nothing changed")
    run(main)


def test_when_timeout_expires() -> None:
    job = JobConfig(name="waiter", exec=["true"],
                    when=WhenConfig(source=["nobody"], once="healthy", timeout=0.3))

    async def main() -> None:
        async with Harness([job, JobConfig(name="other", exec=["sleep", "30"])]) as h:
            await h.wait_event("stopped", "waiter", timeout=3)
            assert h.events("waiter") == ["timerExpired:waiter", "stopping:waiter",
                                          "stopped:waiter"]
            assert h.job("waiter").runs == 0
    run(main)


def test_each_while_running_runs_once_more() -> None:
    job = JobConfig(name="r", exec=sh("sleep 0.3"), when=WhenConfig(source=["SIGHUP"],
                                                                    each=SIGNAL))

    async def main() -> None:
        async with Harness([job]) as h:
            for _ in range(3):  # three triggers during one run: coalesced into one more run
                h.bus.publish(Event(SIGNAL, "SIGHUP"))
                await asyncio.sleep(0.05)
            await h.wait_event("exitSuccess", "r", count=2, timeout=3)
            await stays(lambda: h.job("r").runs == 2, 0.5, "nothing changed")
    run(main)


def test_spawn_failure_publishes_error() -> None:
    async def main() -> None:
        async with Harness([JobConfig(name="bad", exec=["/nonexistent/cmd"])]) as h:
            await h.wait_event("stopped", "bad")
            assert h.events("bad")[:2] == ["exitFailed:bad", "error:bad"]
            assert h.job("bad").last_exit == 127
            assert await h.exited() == 127
    run(main)


def test_changed_from_a_watch_and_quit() -> None:
    jobs = [
        JobConfig(name="reconf", exec=["true"],
                  when=WhenConfig(source=["watch.backend"], each="changed")),
        JobConfig(name="svc", exec=["sleep", "30"], restarts=UNLIMITED),
    ]

    async def main() -> None:
        async with Harness(jobs) as h:
            h.bus.publish(Event("changed", "watch.backend"))
            await h.wait_event("exitSuccess", "reconf")
            h.bus.publish(Event("changed", "watch.other"))
            await stays(lambda: h.job("reconf").runs == 1, 0.2, "nothing changed")
            await until(lambda: h.job("svc").pid, 3)
            h.bus.publish(Event("quit", "svc"))  # ends the job, restarts notwithstanding
            await h.wait_event("stopped", "svc")
            assert h.job("svc").runs == 1 and h.job("svc").done
    run(main)


def test_main_job_periodic_or_timed_out_ends_autopilot() -> None:
    tick = JobConfig(name="tick", exec=sh("exit 4"), when=WhenConfig(interval=0.1), restarts=1,
                     timeout=0.1)
    waiter = JobConfig(name="waiter", exec=["true"],
                       when=WhenConfig(source=["nobody"], once="healthy", timeout=0.2))
    side = JobConfig(name="side", exec=["sleep", "30"])

    async def main() -> None:
        async with Harness([tick, side], main_job="tick") as h:
            assert await h.exited() == 4
            assert h.job("tick").runs == 2 and h.job("side").done
        async with Harness([waiter, side], main_job="waiter") as h:
            assert await h.exited() == 0  # timed out waiting, never ran
            assert h.events("waiter")[0] == "timerExpired:waiter"
    run(main)

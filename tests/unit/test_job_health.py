"""Health checks that never block, status transitions, maintenance, stopping, user/env."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from autopilot.config.model import BackoffConfig, HealthConfig, JobConfig, WhenConfig
from autopilot.events import HEALTHY, UNHEALTHY
from tests.helpers import stays
from tests.unit.job_harness import Harness, run, until

pytestmark = pytest.mark.timeout(30)


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


@pytest.mark.timing
def test_slow_check_blocks_neither_its_job_nor_others(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    slow = JobConfig(name="slow", exec=["sleep", "30"],
                     health=HealthConfig(exec=sh(f"echo x >> {starts}; sleep 30"),
                                         interval=0.1, ttl=5, timeout=3))
    fast = JobConfig(name="fast", exec=["sleep", "30"],
                     health=HealthConfig(exec=["true"], interval=0.1, ttl=5))

    async def main() -> None:
        async with Harness([slow, fast]) as h:
            t0 = time.monotonic()
            # the fast job keeps its 10/s rhythm while slow's check hangs
            await h.wait_event(HEALTHY, "fast", count=8, timeout=2.8)
            assert time.monotonic() - t0 < 2.8
            assert h.count(UNHEALTHY, "slow") == 0
            # the slow check is killed at its timeout and counts as failed
            await h.wait_event(UNHEALTHY, "slow", timeout=5)
            assert h.job("slow").status == "unhealthy"
            checker = h.job("slow").health
            assert checker.skipped_busy >= 3  # ticks during the hung check were skipped
            # never two checks at once: one start per ~3 s, not per 0.1 s tick
            runs = len(starts.read_text().split())
            assert runs <= 1 + int((time.monotonic() - t0) / 3) + 1, runs
            # the job itself still answers: restart its process
            old = h.job("slow").pid
            await h.sup.job_action("slow", "restart")
            await until(lambda: h.job("slow").pid not in (None, old), 3, "new pid")
    run(main)


def test_status_transitions_level_triggered(tmp_path: Path) -> None:
    flag = tmp_path / "ok"
    flag.write_text("")
    job = JobConfig(name="app", exec=["sleep", "30"],
                    health=HealthConfig(exec=sh(f"echo checking; test -e {flag}"),
                                        interval=0.1, ttl=5))

    async def main() -> None:
        async with Harness([job]) as h:
            await h.wait_event(HEALTHY, "app", count=3)  # every passing check publishes
            assert h.job("app").status == "healthy"
            ev = next(e for e in h.bus.history if e.code == HEALTHY)
            assert "checking" in ev.detail
            flag.unlink()
            await h.wait_event(UNHEALTHY, "app", count=2)
            assert h.job("app").status == "unhealthy"
            flag.write_text("")
            n = h.count(HEALTHY, "app")
            await h.wait_event(HEALTHY, "app", count=n + 1)
            assert h.job("app").status == "healthy"
            assert h.count("exitSuccess", "check.app") >= 4
    run(main)


def test_checks_only_while_running_and_heartbeat_without_exec() -> None:
    jobs = [
        JobConfig(name="later", exec=["sleep", "30"],
                  when=WhenConfig(source=["SIGHUP"], each="signal"),
                  health=HealthConfig(exec=["true"], interval=0.05, ttl=5)),
        JobConfig(name="beat", health=HealthConfig(interval=0.05, ttl=5)),
    ]

    async def main() -> None:
        async with Harness(jobs) as h:
            await h.wait_event(HEALTHY, "beat", count=4)
            assert h.count(HEALTHY, "later") == 0  # its process is not running
            assert h.job("beat").status == "healthy"
            # a job without exec and with health never completes on its own
            assert not h.sup.shutting_down
    run(main)


def test_maintenance_skips_checks() -> None:
    job = JobConfig(name="app", exec=["sleep", "30"],
                    health=HealthConfig(exec=["true"], interval=0.05, ttl=5))
    hook = JobConfig(name="onmaint", exec=["true"],
                     when=WhenConfig(source=["global"], each="enterMaintenance"))

    async def main() -> None:
        async with Harness([job, hook]) as h:
            await h.wait_event(HEALTHY, "app")
            h.sup.set_maintenance(True)
            await h.wait_event("exitSuccess", "onmaint")
            n = h.count(HEALTHY, "app")
            await stays(lambda: h.job("app").status == "maintenance" and h.count(HEALTHY, "app") == n, 0.3,
                        "nothing changed")
            h.sup.set_maintenance(False)
            await h.wait_event(HEALTHY, "app", count=n + 1)
            assert h.job("app").status == "healthy"
    run(main)


@pytest.mark.timing
def test_stop_escalates_to_sigkill_at_stop_timeout(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    job = JobConfig(name="stubborn", stop_timeout=0.5,
                    exec=sh(f"trap '' TERM; touch {ready}; while true; do sleep 0.05; done"))

    async def main() -> None:
        async with Harness([job]) as h:
            await until(ready.exists, 5, "job ready")
            t0 = time.monotonic()
            await h.sup.job_action("stubborn", "stop")
            took = time.monotonic() - t0
            assert 0.45 <= took < 2.0, took
            assert h.job("stubborn").last_exit == 128 + signal.SIGKILL
            assert h.job("stubborn").pid is None
    run(main)


@pytest.mark.timing
def test_stop_signal_is_configurable(tmp_path: Path) -> None:
    got = tmp_path / "got"
    job = JobConfig(name="app", stop_signal="SIGUSR1", stop_timeout=3,
                    exec=sh(f"trap 'echo usr1 > {got}; exit 0' USR1; touch {tmp_path}/trapped; "
                            "while true; do sleep 0.05; done"))

    async def main() -> None:
        async with Harness([job]) as h:
            await until(lambda: h.job("app").pid, 3)
            await until(lambda: (tmp_path / "trapped").exists(), 3, "sh to install its trap")
            t0 = time.monotonic()
            assert await h.stop() == 0
            assert time.monotonic() - t0 < 2
            assert got.read_text().strip() == "usr1"
            assert h.job("app").last_exit == 0
    run(main)


def test_env_workdir_and_pid_vars(tmp_path: Path) -> None:
    out = tmp_path / "env"
    job = JobConfig(name="envjob", workdir=str(tmp_path), env={"FOO": "bar=baz"},
                    exec=sh("echo \"$FOO|$(pwd)|$CONTAINERPILOT_PID|$AUTOPILOT_PID|$CTXVAR\" > env"))

    async def main() -> None:
        async with Harness([job]) as h:
            h.sup.ctx.child_env["CTXVAR"] = "fromctx"
            await until(out.exists, 5, "env written")
            await h.wait_event("stopped", "envjob")
        foo, cwd, cp_pid, ap_pid, ctxvar = out.read_text().strip().split("|")
        assert (foo, cwd) == ("bar=baz", str(tmp_path))
        assert cp_pid == ap_pid == str(os.getpid())
        assert ctxvar in ("fromctx", "")  # set after startup: visible from the next start
    run(main)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_user_and_group_switch() -> None:
    # pytest's tmp dirs are private to root: use one that nobody can write to
    tmp_path = Path(tempfile.mkdtemp(prefix="ap-user-"))
    os.chmod(tmp_path, 0o777)
    out = tmp_path / "id"
    nobody = pwd.getpwnam("nobody")
    job = JobConfig(name="drop", user="nobody", group="nogroup",
                    exec=sh(f"echo $(id -u) $(id -g) $(id -G) $HOME > {out}"))
    num = JobConfig(name="num", user="4321", group="4321", exec=sh(f"id -u > {out}.num"))

    async def main() -> None:
        async with Harness([job, num]) as h:
            await h.wait_event("stopped", "drop")
            await h.wait_event("stopped", "num")
    run(main)
    uid, gid, *groups, home = out.read_text().split()
    assert int(uid) == nobody.pw_uid and gid == str(os.getgrouplist("nobody", int(gid))[0])
    assert "0" not in groups  # root's supplementary groups were dropped
    assert home == nobody.pw_dir
    assert (tmp_path / "id.num").read_text().strip() == "4321"
    shutil.rmtree(tmp_path)


def test_job_actions_and_errors(tmp_path: Path) -> None:
    got = tmp_path / "hup"
    job = JobConfig(name="app", exec=sh(f"trap 'echo hup >> {got}' HUP; "
                                        "while true; do sleep 0.05; done"))

    async def main() -> None:
        async with Harness([job]) as h:
            await until(lambda: h.job("app").pid, 3)
            await asyncio.sleep(0.2)
            pid = h.job("app").pid
            await h.sup.job_action("app", "signal", "HUP")
            await until(got.exists, 3, "SIGHUP delivered")
            assert h.job("app").pid == pid
            with pytest.raises(KeyError):
                await h.sup.job_action("nope", "stop")
            with pytest.raises(ValueError):
                await h.sup.job_action("app", "explode")
            with pytest.raises(ValueError):
                await h.sup.job_action("app", "signal", "SIGNOPE")
            await h.sup.job_action("app", "stop")
            assert h.job("app").pid is None and not h.job("app").done
            with pytest.raises(ValueError):
                await h.sup.job_action("app", "signal", "HUP")
            await h.sup.job_action("app", "start")
            await until(lambda: h.job("app").pid, 3)
            assert h.job("app").runs == 2
            status = h.sup.status()
            assert status["jobs"][0]["name"] == "app" and status["jobs"][0]["runs"] == 2
            with pytest.raises(ValueError):
                h.sup.put_metric("x", "not-a-number")
            h.sup.put_metric("x", "1.5")  # no telemetry: ignored
            h.sup.putenv({"AP_TEST_PUTENV": "1"})
            assert os.environ.pop("AP_TEST_PUTENV") == "1"
            with pytest.raises(ValueError):
                h.sup.putenv({"A=B": "1"})
    run(main)


def test_containerpilot_name_pid_var(tmp_path: Path) -> None:
    out = tmp_path / "pidvar"
    # named after the job (ContainerPilot's EnvName of the job name), not the executable
    jobs = [JobConfig(name="test-pid.app", exec=["sleep", "30"]),
            JobConfig(name="reader", exec=sh(f"echo $CONTAINERPILOT_TEST_PID_PID > {out}"),
                      when=WhenConfig(source=["SIGHUP"], each="signal"))]

    async def main() -> None:
        from autopilot.events import SIGNAL, Event
        async with Harness(jobs) as h:
            await until(lambda: h.job("test-pid.app").pid, 3)
            assert "CONTAINERPILOT_SLEEP_PID" not in os.environ
            h.bus.publish(Event(SIGNAL, "SIGHUP"))
            await h.wait_event("exitSuccess", "reader")
            assert out.read_text().strip() == str(h.job("test-pid.app").pid)
            await h.sup.job_action("test-pid.app", "stop")
            assert "CONTAINERPILOT_TEST_PID_PID" not in os.environ  # unset when it exits
    run(main)


def test_periodic_job_manual_stop_and_start() -> None:
    job = JobConfig(name="tick", exec=["sleep", "0.05"], when=WhenConfig(interval=0.2),
                    restarts=-1, timeout=0.2)

    async def main() -> None:
        async with Harness([job]) as h:
            await h.wait_event("exitSuccess", "tick", count=2)
            await h.sup.job_action("tick", "stop")
            n = h.job("tick").runs
            await stays(lambda: h.job("tick").runs == n, 0.5, "stopped: the timer skips its runs")
            await h.sup.job_action("tick", "start")
            await h.wait_event("exitSuccess", "tick", count=h.count("exitSuccess", "tick") + 2)
            # one run per tick again, not a restart loop
            await stays(lambda: h.job("tick").runs <= n + 1 + 5, 0.3, "one run per tick")
            assert h.job("tick").runs <= n + 1 + 5
    run(main)


def test_unexpected_exit_makes_a_healthy_job_unhealthy(tmp_path: Path) -> None:
    flag = tmp_path / "crash"
    job = JobConfig(name="app", restarts=-1,
                    backoff=BackoffConfig(initial=0.5, max=0.5),
                    exec=sh(f"while ! test -e {flag}; do sleep 0.02; done; rm {flag}; exit 3"),
                    health=HealthConfig(exec=["true"], interval=0.1, ttl=5))

    async def main() -> None:
        async with Harness([job]) as h:
            await h.wait_event(HEALTHY, "app")
            flag.write_text("")
            await h.wait_event("exitFailed", "app")
            await h.wait_event(UNHEALTHY, "app")  # at once, not after the next check
            assert h.job("app").status == "unhealthy"
            ev = next(e for e in h.bus.history if e.code == UNHEALTHY)
            assert "exited with status 3" in ev.detail
            await until(lambda: h.job("app").status == "healthy", 5, "healthy after restart")
            # a stop we asked for is not an unhealthy event
            n = h.count(UNHEALTHY, "app")
            await h.sup.job_action("app", "stop")
            assert h.count(UNHEALTHY, "app") == n
    run(main)


def test_failure_threshold_tolerates_brief_failures(tmp_path: Path) -> None:
    # failureThreshold 3: two failed checks in a row change nothing; the third turns the job
    # unhealthy (the default, 1, turns it unhealthy at the first failure)
    fails = tmp_path / "fails"  # how many of the next checks fail
    script = (f'n=$(cat {fails} 2>/dev/null || echo 0); '
              f'if [ "$n" -gt 0 ]; then echo $((n-1)) > {fails}; exit 1; fi')
    job = JobConfig(name="app", exec=["sleep", "30"],
                    health=HealthConfig(exec=sh(script), interval=0.1, ttl=5,
                                        failure_threshold=3))

    async def main() -> None:
        async with Harness([job]) as h:
            await h.wait_event(HEALTHY, "app", timeout=5)
            fails.write_text("2")
            await until(lambda: not fails.read_text().strip() or fails.read_text() == "0\n",
                        5, "two failed checks")
            await h.wait_event(HEALTHY, "app", count=h.count(HEALTHY, "app") + 2, timeout=5)
            assert h.count(UNHEALTHY, "app") == 0
            assert h.job("app").status == "healthy"
            fails.write_text("100")
            await h.wait_event(UNHEALTHY, "app", timeout=5)
            assert h.job("app").health.failures >= 3
            assert h.job("app").status == "unhealthy"
    run(main)


def test_next_tick_comes_at_most_a_tenth_early_and_falls_on_the_shared_grid() -> None:
    """Checkers with one interval converge on the same loop time (one wake-up for all)
    without a gap between two checks ever growing past the interval; the grid starts at
    this process's own offset (supervisors on one host do not all tick at once)."""
    from autopilot.aio import ALIGN_SHIFT, GRID_OFFSET, next_tick

    assert 0 <= GRID_OFFSET < 1
    for interval in (1.0, 0.3, 5.0, 10.0):
        last = []
        for phase in (0.0, 0.003, 0.05, 0.42, 0.77, 0.999):
            t = 1000.0 + phase * interval
            for _ in range(12):
                nxt = next_tick(t, interval)
                assert interval * (1 - ALIGN_SHIFT) - 1e-9 <= nxt - t <= interval + 1e-9
                t = nxt
            k = (t - GRID_OFFSET) / interval
            assert abs(k - round(k)) < 1e-6  # on the grid after at most 10 ticks
            last.append(round(k))
        # every phase ends on the same grid: later ticks of any two coincide exactly
        assert max(last) - min(last) <= 2

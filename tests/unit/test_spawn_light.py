"""Health checks spawn through ``os.posix_spawn`` (``Process(light=True)``): the same outcome
as Popen (output, exit status, process group, stdin, signals, PATH lookup, errors)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from autopilot.config.model import HealthConfig, JobConfig
from autopilot.events import HEALTHY
from autopilot.jobs import process as process_mod
from autopilot.jobs.process import Process, child_env
from autopilot.logs import capture
from tests.unit.job_harness import Harness, run, until

pytestmark = pytest.mark.timeout(30)


async def finish(proc: Process) -> int:
    proc.start()
    return await proc.wait(10)


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The argv of every child started through ``process.posix_spawn`` (the light path)."""
    calls: list[list[str]] = []
    real = process_mod.posix_spawn

    def spy(argv: list[str], *args: object, **kwargs: object) -> int:
        calls.append(list(argv))
        return real(argv, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(process_mod, "posix_spawn", spy)
    return calls


def test_output_status_group_stdin_and_signals(spawned: list[list[str]]) -> None:
    script = ('echo out; echo err >&2; cat; ps -o pgid= -p $$ | tr -d " "; echo pid=$$; '
              'grep SigIgn /proc/self/status; exit 3')

    async def main() -> None:
        proc = Process(["sh", "-c", script], env=child_env(), light=True)
        assert await finish(proc) == 3
        assert spawned == [["sh", "-c", script]]  # the posix_spawn path was taken
        lines = proc.output_tail.splitlines()
        assert lines[:2] == ["out", "err"]  # stdout and stderr, in order; cat saw EOF
        assert lines[2] == lines[3].removeprefix("pid=")  # its own process group
        ignored = int(lines[4].split()[1], 16)
        assert not ignored & (1 << (signal.SIGPIPE - 1))  # SIGPIPE back to its default
    run(main)


def test_path_lookup_in_the_child_environment(tmp_path: Path) -> None:
    tool = tmp_path / "mytool"
    tool.write_text("#!/bin/sh\necho tool ran\n")
    tool.chmod(0o755)

    async def main() -> None:
        env = child_env(None, {"PATH": f"{tmp_path}:/usr/bin:/bin"})
        proc = Process(["mytool"], env=env, light=True)
        assert await finish(proc) == 0 and proc.output_tail == "tool ran"
        tool.unlink()  # the cached path is dropped when the file goes away
        with pytest.raises(FileNotFoundError) as exc:
            Process(["mytool"], env=env, light=True).start()
        with pytest.raises(FileNotFoundError) as theirs:
            subprocess.Popen(["mytool"], env=env)
        assert str(exc.value) == str(theirs.value)
    run(main)


def test_popen_kept_when_needed(tmp_path: Path, spawned: list[list[str]]) -> None:
    async def main() -> None:
        proc = Process(["pwd"], env=child_env(), cwd=str(tmp_path), light=True)
        assert await finish(proc) == 0 and proc.output_tail == str(tmp_path)
        assert spawned == []  # Popen: posix_spawn has no cwd in Python 3.11
    run(main)


def test_environment_snapshot_follows_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AP_SPAWN_TEST", "1")
    assert child_env()["AP_SPAWN_TEST"] == "1"
    monkeypatch.setenv("AP_SPAWN_TEST", "2")  # what `ctl putenv` does
    assert child_env()["AP_SPAWN_TEST"] == "2"
    monkeypatch.delenv("AP_SPAWN_TEST")
    env = child_env()
    assert "AP_SPAWN_TEST" not in env
    env["X"] = "mutating a copy"
    assert "X" not in child_env() and child_env()["PATH"] == os.environ["PATH"]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _check_job(script: str, **health: object) -> JobConfig:
    return JobConfig(name="app", exec=["sleep", "30"],
                     health=HealthConfig(exec=["sh", "-c", script], ttl=5,
                                         **{"interval": 0.1, **health}))  # type: ignore[arg-type]


def test_checks_share_one_kept_pipe_and_each_reads_only_its_own_output() -> None:
    """Every check of a job writes to the one pipe its checker keeps (no pipe per check):
    each check's result and log lines are still its own, a last line without a newline
    included; nothing leaks a descriptor; stopping the job closes the pipe."""
    job = _check_job("echo out $$; echo err $$ >&2; printf 'tail %s' $$")

    async def main() -> None:
        with capture() as logs:
            async with Harness([job]) as h:
                await h.wait_event(HEALTHY, "app", timeout=5)
                checker = h.job("app").health
                pipe = checker._pipe
                assert pipe is not None and pipe.read_fd >= 0
                fds = _open_fds()
                await h.wait_event(HEALTHY, "app", count=h.count(HEALTHY, "app") + 10,
                                   timeout=10)
                assert checker._pipe is pipe  # the same pipe, check after check
                assert _open_fds() <= fds + 1  # + a check in flight's own nothing
                details = [e.detail for e in h.bus.history
                           if e.code == HEALTHY and e.source == "app"]
            assert pipe.read_fd == -1 and pipe.write_fd == -1  # closed at the job's stop
        for detail in details:
            pid = detail.split()[1]
            assert detail == f"out {pid}\nerr {pid}\ntail {pid}", detail
        lines = [(r["pid"], r["event"]) for r in logs if r.get("check") == "check.app"]
        by_pid: dict[int, list[str]] = {}
        for pid, line in lines:
            by_pid.setdefault(pid, []).append(line)
        assert len(by_pid) >= 10
        for pid, got in by_pid.items():
            assert got == [f"out {pid}", f"err {pid}", f"tail {pid}"], got
    run(main)


def test_output_beyond_the_pipe_capacity_is_read_and_logged_in_full() -> None:
    """A check that writes more than a pipe holds (64 KB) waits for the supervisor to read,
    as with a pipe of its own: it is read from the tick it outlives on, every line is
    logged in order and the result carries the end of it."""
    job = _check_job("seq 1 40000", interval=0.3, timeout=10)

    async def main() -> None:
        with capture() as logs:
            async with Harness([job]) as h:
                await h.wait_event(HEALTHY, "app", timeout=10)
                detail = next(e.detail for e in h.bus.history if e.code == HEALTHY)
                pid = int(next(r["pid"] for r in logs if r.get("check") == "check.app"))
        lines = [r["event"] for r in logs if r.get("check") == "check.app" and r["pid"] == pid]
        assert lines == [str(i) for i in range(1, 40001)]
        assert detail == "\n".join(str(i) for i in range(1, 40001))[-1024:].lstrip("\n")
    run(main)


def test_a_check_whose_group_outlives_it_takes_the_pipe_with_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Something a check left running in its process group is killed at the check's exit;
    the check keeps reading the pipe until that is gone, then closes it, and the next check
    gets a new pipe: nothing the old group wrote can show in a later check's result."""
    from autopilot.jobs import health as health_mod

    made: list[process_mod.OutputPipe] = []
    inodes: list[tuple[int, int]] = []  # (read end, its pipe's inode)

    class Recorded(process_mod.OutputPipe):
        __slots__ = ()

        def __init__(self) -> None:
            super().__init__()
            made.append(self)
            inodes.append((self.read_fd, os.fstat(self.read_fd).st_ino))

    def closed(fd: int, ino: int) -> bool:
        try:
            return os.fstat(fd).st_ino != ino
        except OSError:
            return True

    monkeypatch.setattr(health_mod, "OutputPipe", Recorded)
    job = _check_job("(trap '' TERM; sleep 5; echo late) & echo now $$", interval=0.2)

    async def main() -> None:
        async with Harness([job]) as h:
            await h.wait_event(HEALTHY, "app", count=6, timeout=10)
            n = h.count(HEALTHY, "app")
            assert len(made) >= n  # a new pipe for every check after such a check
            await until(lambda: all(closed(*i) for i in inodes[:n]), 5,
                        "the handed-over pipes closed once their group is gone")
            assert all(p.write_fd == -1 and p.read_fd == -1 for p in made[:n])
            details = [e.detail for e in h.bus.history if e.code == HEALTHY]
            assert all(d.startswith("now ") and "late" not in d for d in details), details
    run(main)

"""Health checks spawn through ``os.posix_spawn`` (``Process(light=True)``): the same outcome
as Popen (output, exit status, process group, stdin, signals, PATH lookup, errors)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from autopilot.jobs import process as process_mod
from autopilot.jobs.process import Process, child_env
from tests.unit.job_harness import run

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

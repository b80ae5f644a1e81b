"""The health check's prepared spawn (`autopilot.jobs.spawn`) makes the child
``os.posix_spawn`` made: stdin from /dev/null, stdout and stderr to the pipe, its own
process group, SIGPIPE/SIGXFSZ at their defaults, exactly the environment given; errors as
OSError; a failed prepared spawn falls back to ``os.posix_spawn`` (real processes)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from autopilot.jobs import spawn
from autopilot.jobs.process import RESTORED_SIGNALS, OutputPipe, Process

pytestmark = pytest.mark.timeout(30)

SCRIPT = ("echo pgid=$(ps -o pgid= -p $$ | tr -d ' ') pid=$$; echo env=$(env | sort | tr '\\n' ,);"
          " grep SigIgn /proc/$$/status >&2; cat; echo stdin-done")


def run(prepared: spawn.PreparedSpawn, r: int) -> tuple[int, str]:
    pid = prepared()
    _, status = os.waitpid(pid, 0)
    out = b""
    while True:
        try:
            chunk = os.read(r, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        out += chunk
    return status, out.decode()


def test_prepared_spawn_makes_the_same_child_every_time() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    env = {"PATH": "/usr/bin:/bin", "GREETING": "grüß dich"}
    prepared = spawn.prepare("/bin/sh", ["sh", "-c", SCRIPT], env, w, RESTORED_SIGNALS)
    assert prepared is not None
    try:
        for _ in range(3):  # reused: the same child each time
            status, out = run(prepared, r)
            assert os.waitstatus_to_exitcode(status) == 0
            fields = dict(part.split("=", 1) for part in out.split() if "=" in part
                          and part.split("=", 1)[0] in ("pgid", "pid"))
            assert fields["pgid"] == fields["pid"]  # a process group of its own
            assert "env=GREETING=grüß dich,PATH=/usr/bin:/bin,PWD=" in out
            ignored = int(out.split("SigIgn:")[1].split()[0], 16)
            assert not ignored & (1 << (signal.SIGPIPE - 1))  # back at its default
            assert not ignored & (1 << (signal.SIGXFSZ - 1))
            assert out.rstrip().endswith("stdin-done")  # stdin is /dev/null
    finally:
        prepared.close()
        os.close(r)
        os.close(w)
    with pytest.raises(RuntimeError):
        prepared()


def test_prepared_spawn_of_a_missing_executable_raises_file_not_found() -> None:
    prepared = spawn.prepare("/nonexistent/check", ["check"], {}, 1, ())
    assert prepared is not None
    with pytest.raises(FileNotFoundError):
        prepared()
    prepared.close()


def test_a_stale_prepared_spawn_falls_back_to_os_posix_spawn() -> None:
    """A prepared spawn whose executable went away fails; the check is spawned by
    ``os.posix_spawn`` (which looks the command up again) and the spawn is marked stale."""
    asyncio.run(stale_falls_back())


async def stale_falls_back() -> None:
    pipe = OutputPipe()
    env = {"PATH": "/usr/bin:/bin"}
    prepared = spawn.prepare("/nonexistent/true", ["true"], env, pipe.write_fd, ())
    assert prepared is not None
    exited: list[int | None] = []
    proc = Process(["true"], env=env, light=True, output=pipe, prepared=prepared)
    done = asyncio.get_running_loop().create_future()

    def on_exit(p: Process) -> None:
        exited.append(p.returncode)
        done.set_result(None)

    proc.start(on_exit, watch_output=False)
    await asyncio.wait_for(done, 10)
    assert exited == [0]
    assert prepared.stale
    prepared.close()
    pipe.close()

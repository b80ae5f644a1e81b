"""The one reaper: our children, asyncio's subprocesses and orphans all go through it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from autopilot.init import exit_code, get_reaper, set_subreaper
from autopilot.jobs.hooks import run_hook
from autopilot.jobs.process import Process, parse_signal, resolve_identity
from tests.unit.job_harness import run, until

pytestmark = pytest.mark.timeout(30)


def test_asyncio_subprocess_and_run_hook_share_the_reaper() -> None:
    async def main() -> None:
        reaper = get_reaper()
        # asyncio's subprocess API keeps working: its exit statuses come from our reaper
        procs = [await asyncio.create_subprocess_exec("sh", "-c", f"exit {i}")
                 for i in range(5)]
        codes = [await asyncio.wait_for(p.wait(), 5) for p in procs]
        assert codes == [0, 1, 2, 3, 4]
        p = await asyncio.create_subprocess_exec(sys.executable, "-c", "print('hi')",
                                                 stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(p.communicate(), 5)
        assert out.strip() == b"hi" and p.returncode == 0
        # run_hook, for hooks of other components
        res = await run_hook(["sh", "-c", "echo out; exit 6"], timeout=5, name="hook")
        assert (res.rc, res.output, res.timed_out) == (6, "out", False)
        res = await run_hook(["sleep", "30"], timeout=0.2, name="hook")
        assert res.timed_out and res.rc == 128 + signal.SIGKILL
        assert reaper.watching == 0  # nothing left waiting
    run(main)


def test_orphans_are_reaped_as_subreaper() -> None:
    async def main() -> None:
        assert set_subreaper()
        reaper = get_reaper()
        before = reaper.orphans_reaped
        # the shell exits at once; its three children become ours and are reaped
        proc = Process(["sh", "-c", "for i in 1 2 3; do (sleep 0.2 &); done"])
        proc.start()
        assert await proc.wait(5) == 0
        await until(lambda: reaper.orphans_reaped >= before + 3, 5, "orphans reaped")
        # no zombie children left
        await until(lambda: not _zombie_children(), 3, "no zombies")
    run(main)


def _zombie_children() -> list[int]:
    me, out = os.getpid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            out.append(int(pid))
    return out


def test_helpers() -> None:
    assert parse_signal("TERM") == signal.SIGTERM and parse_signal("SIGHUP") == signal.SIGHUP
    assert parse_signal(9) == signal.SIGKILL and parse_signal("15") == signal.SIGTERM
    with pytest.raises(ValueError):
        parse_signal("SIGBOGUS")
    assert exit_code(3 << 8) == 3 and exit_code(signal.SIGKILL) == 137
    ident = resolve_identity("nobody", None)
    assert ident.uid == 65534 and ident.gid is not None and ident.home
    assert resolve_identity("1234", "5678").groups == [5678]
    with pytest.raises(KeyError):
        resolve_identity("no-such-user-here", None)
    with pytest.raises(KeyError):
        resolve_identity(None, "no-such-group-here")

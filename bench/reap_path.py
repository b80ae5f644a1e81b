"""SIGCHLD and the reaper against pidfds: what learning of a check's exit costs the loop.

Not a test. Run: ``python3 bench/reap_path.py [N]`` (Debian's python3 for the images'
figures). Spawns ``/bin/true`` N times per variant on autopilot's own event loop
(``aio.SupervisorLoop``), one every 20 ms as a supervisor's checks come, and prints the
loop thread's CPU time per check, spawn included (also written to
bench/results/reap_path.json):

- ``sigchld``: what autopilot does: ``SIGCHLD`` through the loop's self-pipe runs the
  reaper (``init.Reaper``: ``waitpid(-1, WNOHANG)`` until nothing is left);
- ``pidfd``: ``pidfd_open`` per check, the pidfd in the loop's epoll, ``waitid(P_PIDFD)``
  at its readiness, ``remove_reader`` and ``close``; ``SIGCHLD`` left at its default (so
  not delivered at all). Its best case: a supervisor must still reap orphans (PID 1, or
  a subreaper), which only ``SIGCHLD`` tells it of, so a real pidfd reaper would pay this
  on top of the ``SIGCHLD`` path, not instead of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

from autopilot.aio import SupervisorLoop
from autopilot.init import get_reaper

ENV = dict(os.environ)
GAP = 0.02
RESULTS = Path(__file__).resolve().parent / "results" / "reap_path.json"


def spawn() -> int:
    return os.posix_spawn("/bin/true", ["true"], ENV, setpgroup=0, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)])


async def sigchld(n: int) -> float:
    loop = asyncio.get_running_loop()
    reaper = get_reaper()
    done = 0

    def reaped(status: int) -> None:
        nonlocal done
        done += 1

    t0 = time.thread_time()
    for _ in range(n):
        reaper.watch(spawn(), reaped)
        await asyncio.sleep(GAP)
    while done < n:
        await asyncio.sleep(GAP)
    used = time.thread_time() - t0
    reaper.close()
    del loop
    return used / n


async def pidfd(n: int) -> float:
    loop = asyncio.get_running_loop()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    done = 0

    def exited(fd: int) -> None:
        nonlocal done
        loop.remove_reader(fd)
        os.waitid(os.P_PIDFD, fd, os.WEXITED)
        os.close(fd)
        done += 1

    t0 = time.thread_time()
    for _ in range(n):
        fd = os.pidfd_open(spawn())
        loop.add_reader(fd, exited, fd)
        await asyncio.sleep(GAP)
    while done < n:
        await asyncio.sleep(GAP)
    return (time.thread_time() - t0) / n


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    res: dict[str, list[float]] = {"sigchld": [], "pidfd": []}
    for _ in range(3):  # alternate, each on a fresh loop
        for name, fn in (("sigchld", sigchld), ("pidfd", pidfd)):
            loop = SupervisorLoop()
            try:
                res[name].append(loop.run_until_complete(fn(n)))
            finally:
                loop.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    print(f"python {sys.version.split()[0]}, {n} checks x 3 rounds per variant, load "
          f"{os.getloadavg()[0]:.1f}; loop thread CPU per check (spawn included), µs")
    for name, v in res.items():
        print(f"{name:8s} median {1e6 * statistics.median(v):6.1f}  rounds "
              + " ".join(f"{1e6 * x:6.1f}" for x in v))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "python": sys.version.split()[0], "checks_per_round": n, "load": os.getloadavg()[0],
        "us_per_check": {k: {"median": round(1e6 * statistics.median(v), 1),
                             "rounds": [round(1e6 * x, 1) for x in v]}
                         for k, v in res.items()}}, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

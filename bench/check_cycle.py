"""What one health check's spawn and reap cost the supervisor, variant against variant.

Not a test. Run: ``python3 bench/check_cycle.py [N]`` (Debian's python3 for the images'
figures). Spawns ``/bin/true`` N times per variant, round-robin, with a sleep between
spawns as a supervisor has (its caches go cold), and prints the median of the parent's
own CPU time (``thread_time``) for the spawn part (everything up to the return of
``posix_spawn``) and the exit part (``waitpid`` and reading the output), per variant,
and writes them to bench/results/check_cycle.json:

- ``pipe``: a new pipe per check (pipe2, close of the write end, O_NONBLOCK, EOF read,
  close): what autopilot did before session 6;
- ``kept-pipe``: one pipe kept across checks, read at the exit only if ``poll`` says so
  (``jobs.process.OutputPipe``);
- ``memfd``: one memfd kept across checks, its size by ``lseek`` (tried, not kept: a check
  writing without end fills memory instead of waiting);
- ``kept-pipe+probe``: the kept pipe plus the group probe ``kill(-pgid, 0)`` that autopilot
  does at every check's exit;
- ``kept-pipe+exc``: the kept pipe read until ``BlockingIOError`` instead of ``poll``
  (the cost of an exception raised and caught with cold caches);
- ``prepared``: the kept pipe, spawned by libc's ``posix_spawn`` with argv, environment,
  file actions and attributes prepared once (``jobs.spawn.PreparedSpawn``, what autopilot
  does since session 7) instead of ``os.posix_spawn`` building them at every call.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from autopilot.jobs.process import RESTORED_SIGNALS  # noqa: E402 - the tree being measured
from autopilot.jobs.spawn import prepare  # noqa: E402

GAP = 0.02  # between two spawns, as a supervisor's loop sleeps between checks
tt = time.thread_time_ns
RESULTS = Path(__file__).resolve().parent / "results" / "check_cycle.json"
ENV = dict(os.environ)


def spawn(fd: int) -> int:
    return os.posix_spawn("/bin/true", ["true"], ENV, setpgroup=0, setsigdef=RESTORED_SIGNALS,
                          file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                        (os.POSIX_SPAWN_DUP2, fd, 1),
                                        (os.POSIX_SPAWN_DUP2, fd, 2)])


def pipe_cycle() -> tuple[int, int]:
    a = tt()
    r, w = os.pipe()
    pid = spawn(w)
    os.close(w)
    os.set_blocking(r, False)
    b = tt()
    time.sleep(0.002)
    c = tt()
    os.waitpid(pid, 0)
    while os.read(r, 65536):
        pass
    os.close(r)
    return b - a, tt() - c


KR, KW = os.pipe()
os.set_blocking(KR, False)
POLL = select.poll()
POLL.register(KR, select.POLLIN)
MFD = os.memfd_create("check", os.MFD_CLOEXEC)


def kept_fd_cycle(fd: int, after_exit: Callable[[int], object]) -> tuple[int, int]:
    """One check writing to a kept descriptor: the parent's CPU (ns) for the spawn part
    and for the exit part (``waitpid``, then ``after_exit(pid)``: reading the output)."""
    a = tt()
    pid = spawn(fd)
    b = tt()
    time.sleep(0.002)
    c = tt()
    os.waitpid(pid, 0)
    after_exit(pid)
    return b - a, tt() - c


def kept(probe: bool = False, exc: bool = False) -> tuple[int, int]:
    def read_output(pid: int) -> None:
        if exc:
            try:
                os.read(KR, 65536)
            except BlockingIOError:
                pass
        elif POLL.poll(0):
            os.read(KR, 65536)
        if probe:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                pass
    return kept_fd_cycle(KW, read_output)


def memfd_cycle() -> tuple[int, int]:
    def read_output(_pid: int) -> None:
        if os.lseek(MFD, 0, os.SEEK_CUR):
            os.pread(MFD, 65536, 0)
            os.ftruncate(MFD, 0)
            os.lseek(MFD, 0, os.SEEK_SET)
    return kept_fd_cycle(MFD, read_output)


PREPARED = prepare("/bin/true", ["true"], ENV, KW, RESTORED_SIGNALS)


def prepared_cycle() -> tuple[int, int]:
    """The kept pipe, spawned by the prepared spawn (``jobs.spawn``)."""
    assert PREPARED is not None, "libc's posix_spawn cannot be called here"
    a = tt()
    pid = PREPARED()
    b = tt()
    time.sleep(0.002)
    c = tt()
    os.waitpid(pid, 0)
    if POLL.poll(0):
        os.read(KR, 65536)
    return b - a, tt() - c


VARIANTS = {"pipe": pipe_cycle, "kept-pipe": kept, "memfd": memfd_cycle,
            "kept-pipe+probe": lambda: kept(probe=True),
            "kept-pipe+exc": lambda: kept(exc=True), "prepared": prepared_cycle}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    res: dict[str, list[tuple[int, int]]] = {k: [] for k in VARIANTS}
    names = list(VARIANTS)
    for i in range(n):
        for name in names[i % len(names):] + names[:i % len(names)]:
            res[name].append(VARIANTS[name]())
            time.sleep(GAP)
    print(f"python {sys.version.split()[0]}, {n} spawns per variant, load "
          f"{os.getloadavg()[0]:.1f}; parent CPU, median µs")
    rows = {}
    for name, v in res.items():
        spawn_us = statistics.median(x[0] for x in v) / 1e3
        exit_us = statistics.median(x[1] for x in v) / 1e3
        rows[name] = {"spawn_us": round(spawn_us, 1), "exit_us": round(exit_us, 1),
                      "total_us": round(spawn_us + exit_us, 1)}
        print(f"{name:16s} spawn {spawn_us:6.1f}  exit {exit_us:6.1f}  "
              f"total {spawn_us + exit_us:6.1f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"python": sys.version.split()[0], "spawns": n,
                                   "load": os.getloadavg()[0], "median_us": rows},
                                  indent=1) + "\n")
    print(f"wrote {RESULTS}")

if __name__ == "__main__":
    main()

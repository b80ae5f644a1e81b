"""Spawning, watching and stopping one child process (and its process group).

Every child gets its own process group so a stop or a timeout reaches everything it forked:
``stop_signal`` to the group, then SIGKILL to the group at the deadline. Exit statuses come
from the one reaper (``autopilot.init``), never from ``Popen.wait``. Output is read
without threads (``loop.add_reader``) and logged line by line with ``job``/``pid`` fields,
unless the job asked for raw output (then the child writes to our stdout/stderr directly).
"""

from __future__ import annotations

import asyncio
import errno
import grp
import os
import pwd
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopilot.init import Reaper, exit_code, get_reaper
from autopilot.logs import get_logger

if TYPE_CHECKING:
    from autopilot.jobs.spawn import PreparedSpawn

log = get_logger("autopilot.process")

TAIL_BYTES = 4096
MAX_LINE = 64 * 1024
SIGTERM = signal.SIGTERM


def parse_signal(value: str | int | None, default: int = signal.SIGTERM) -> signal.Signals:
    """``"SIGTERM"``, ``"TERM"``, ``"15"`` or ``15`` -> signal.Signals; ValueError otherwise."""
    if value is None or value == "":
        return signal.Signals(default)
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        try:
            return signal.Signals(int(value))
        except ValueError:
            raise ValueError(f"unknown signal {value!r}") from None
    name = str(value).strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"unknown signal {value!r}") from None


@dataclass
class Identity:
    """Resolved ``user``/``group`` for Popen(user=, group=, extra_groups=)."""

    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None
    home: str | None = None
    name: str | None = None


def resolve_identity(user: str | None, group: str | None) -> Identity:
    """Names or numbers; supplementary groups as ``initgroups`` would set them.

    Raises KeyError for an unknown user or group name."""
    ident = Identity()
    pw = None
    if user not in (None, ""):
        user = str(user)
        if user.isdigit():
            ident.uid = int(user)
            try:
                pw = pwd.getpwuid(ident.uid)
            except KeyError:
                pw = None
        else:
            try:
                pw = pwd.getpwnam(user)
            except KeyError:
                raise KeyError(f"unknown user {user!r}") from None
            ident.uid = pw.pw_uid
    if group not in (None, ""):
        group = str(group)
        if group.isdigit():
            ident.gid = int(group)
        else:
            try:
                ident.gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise KeyError(f"unknown group {group!r}") from None
    elif pw is not None:
        ident.gid = pw.pw_gid
    if ident.uid is not None:
        if pw is not None:
            ident.name, ident.home = pw.pw_name, pw.pw_dir
            ident.groups = os.getgrouplist(pw.pw_name, ident.gid if ident.gid is not None
                                           else pw.pw_gid)
        else:
            ident.groups = [ident.gid] if ident.gid is not None else []
    return ident


_environ_cache: tuple[dict[bytes, bytes], dict[str, str]] | None = None


def _environ() -> dict[str, str]:
    """A copy of ``os.environ``, decoded once per change rather than once per child.

    ``dict(os.environ)`` decodes every key and value in Python on each call, which was
    most of what spawning a health check cost; the raw bytes mapping behind it is compared
    (in C) against the last snapshot instead."""
    global _environ_cache
    raw: dict[bytes, bytes] = os.environ._data  # type: ignore[attr-defined]
    if _environ_cache is None or _environ_cache[0] != raw:
        _environ_cache = (dict(raw), dict(os.environ))
    return dict(_environ_cache[1])


_pid: str | None = None


def _our_pid() -> str:
    """Our pid as text, asked of the kernel once (and again in a forked child)."""
    global _pid
    if _pid is None:
        _pid = str(os.getpid())
    return _pid


def _forget_pid() -> None:
    global _pid
    _pid = None


os.register_at_fork(after_in_child=_forget_pid)


def child_env(base: Mapping[str, str] | None = None, *extra: Mapping[str, str] | None
              ) -> dict[str, str]:
    """``os.environ | extras…`` plus CONTAINERPILOT_PID / AUTOPILOT_PID (our pid)."""
    env = _environ() if base is None else dict(base)
    for e in extra:
        if e:
            env.update({k: str(v) for k, v in e.items()})
    pid = _our_pid()
    env["CONTAINERPILOT_PID"] = pid
    env["AUTOPILOT_PID"] = pid
    return env


_exec_cache: dict[tuple[str, str], str] = {}
#: signals Popen's ``restore_signals`` puts back to their default in the child
RESTORED_SIGNALS = tuple(getattr(signal, n) for n in ("SIGPIPE", "SIGXFZ", "SIGXFSZ")
                         if hasattr(signal, n))


def find_executable(name: str, env: Mapping[str, str]) -> str:
    """``name`` on the child's PATH (as Popen looks it up), cached; FileNotFoundError."""
    if "/" in name:
        return name
    key = (name, env.get("PATH", os.defpath))
    found = _exec_cache.get(key)
    if found is None:
        for directory in os.get_exec_path(dict(env)):
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                found = _exec_cache[key] = candidate
                break
        else:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    return found


def posix_spawn(argv: list[str], env: Mapping[str, str], stdout_fd: int | None) -> int:
    """Start ``argv`` with ``os.posix_spawn`` (vfork+exec in glibc: no copy of our page
    tables, no Python code in the child): stdin from /dev/null, stdout and stderr to
    ``stdout_fd`` (None: ours), its own process group, SIGPIPE/SIGXFSZ at their defaults.

    Every descriptor Python opened is close-on-exec, so nothing else leaks into the child."""
    actions: list[tuple[Any, ...]] = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    if stdout_fd is not None:
        actions += [(os.POSIX_SPAWN_DUP2, stdout_fd, 1), (os.POSIX_SPAWN_DUP2, stdout_fd, 2)]
    key = (argv[0], env.get("PATH", os.defpath))
    cached = key in _exec_cache
    try:
        return os.posix_spawn(find_executable(argv[0], env), argv, env, file_actions=actions,
                              setpgroup=0, setsigdef=RESTORED_SIGNALS)
    except FileNotFoundError:
        if not cached:
            raise
        del _exec_cache[key]  # it moved or went away: look it up again, once
        return os.posix_spawn(find_executable(argv[0], env), argv, env, file_actions=actions,
                              setpgroup=0, setsigdef=RESTORED_SIGNALS)


def spawns_light(cwd: str | None, user: str | None, group: str | None,
                 pass_fds: tuple[int, ...] = ()) -> bool:
    """Whether a ``light`` process is started by ``posix_spawn``: nothing it needs takes
    Popen's child code (a working directory, an identity, inherited descriptors)."""
    return not (cwd or user or group or pass_fds)


class OutputPipe:
    """A pipe kept across the runs of one light process (a health check's, every interval):
    the child gets its write end as stdout and stderr, the owner keeps both ends open.

    A new pipe per check cost ``pipe2``, a ``close`` of the write end after the spawn,
    ``ioctl(FIONBIO)``, the read of its end-of-file and a ``close`` of the read end: five
    system calls and a pipe's allocation and release, about 25 µs of the supervisor's CPU a
    check here. Kept, a check that wrote nothing costs one ``poll`` at its exit. It is still
    a pipe: a check that writes more than it holds (64 KB) waits for the supervisor to read,
    as before. It never sees end-of-file (its owner holds the write end), so a run reads it
    at its exit until it is empty; if something the check forked is still there at its exit
    (killed then), the run takes the pipe with it (``Process.adopt_output``: read until
    every writer is gone, then closed) and the owner makes a new one for the next run."""

    __slots__ = ("read_fd", "write_fd", "_poll")

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()  # both close-on-exec
        os.set_blocking(self.read_fd, False)
        self._poll = select.poll()
        self._poll.register(self.read_fd, select.POLLIN)

    def pending(self) -> bool:
        """Something to read (one ``poll``, no exception on an empty pipe)."""
        return bool(self._poll.poll(0))

    def close_write(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        """Close both ends (the owner is done with it and no run has it)."""
        self.close_write()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1


class Process:
    """One run of a command: spawn, stream its output, wait, stop with escalation."""

    def __init__(self, argv: list[str], *, env: Mapping[str, str] | None = None,
                 cwd: str | None = None, user: str | None = None, group: str | None = None,
                 raw: bool = False, log_fields: Mapping[str, Any] | None = None,
                 capture: bool = True, pass_fds: tuple[int, ...] = (),
                 light: bool = False, output: OutputPipe | None = None,
                 prepared: PreparedSpawn | None = None) -> None:
        """``pass_fds``: descriptors the child inherits at the same numbers (a function's
        socket; see autopilot/jobs/function.py). ``light``: spawn with ``posix_spawn`` when
        nothing needs Popen (no cwd, user, group or pass_fds) — health checks, which run
        every interval; a job's own process keeps Popen's ``close_fds``. A light process
        takes ``env`` as given (the caller hands over a fresh dict, e.g. ``child_env()``'s)
        instead of copying it: one copy less per check. ``output``: a light process's
        stdout and stderr go to this kept pipe instead of a new one (see ``OutputPipe``;
        ignored when the process is not spawned light or its output is raw).
        ``prepared``: with ``output``, how to spawn it (`jobs.spawn`: the same command,
        environment and pipe, prepared once by the caller); on failure it is marked
        ``stale`` and ``os.posix_spawn`` tries instead."""
        self.light = light
        self.argv = argv if light else list(argv)
        self.pass_fds = tuple(pass_fds)
        self.env = (env if light and isinstance(env, dict) else dict(env)) \
            if env is not None else child_env()
        self.cwd = cwd
        self.user, self.group = user, group
        self.raw = raw
        self.capture = capture
        self.fields = log_fields or {}
        self.pid: int | None = None
        self.started_at = 0.0
        self.returncode: int | None = None  # shell style: code or 128+signal
        self.waitstatus: int | None = None
        self.timed_out = False
        self._popen: subprocess.Popen[bytes] | None = None
        self._exit: asyncio.Future[int] | None = None  # made when someone awaits the exit
        self._on_exit_cb: Callable[[Process], None] | None = None
        self._fd: int | None = None
        self._shared = output  # a kept pipe, lent by its owner for this run
        self._prepared = prepared
        self._watched = False  # the pipe is registered with the loop
        self._buf = b""
        self._tail = bytearray()
        self._eof: asyncio.Event | None = None
        self._bound: Any = None  # the logger with our fields, bound on first use

    # -- spawning ---------------------------------------------------------------------------
    def start(self, on_exit: Callable[[Process], None] | None = None,
              watch_output: bool = True, reaper: Reaper | None = None) -> int:
        """Spawn now (on the loop thread). Raises OSError/KeyError/ValueError if it cannot.

        ``on_exit(self)`` is called on the loop, from the reaper, once the exit status is
        known and the output already in the pipe is read: a health check finishes there,
        with no task, future or timer of its own. ``watch_output=False`` leaves the pipe
        out of the event loop until ``watch_output()`` (a check that exits at once is read
        once, at its exit: two ``epoll_ctl`` calls and a loop wake-up less; the pipe holds
        64 KB meanwhile). ``reaper``: the running loop's (``get_reaper()``), passed by a
        caller that spawns every interval and keeps it (asking the running loop costs a
        ``getpid`` system call on Python 3.11)."""
        if reaper is None:
            reaper = get_reaper()
        env = self.env
        read_fd: int | None = None
        if self.light and self.argv and spawns_light(self.cwd, self.user, self.group,
                                                     self.pass_fds):
            shared = self._shared
            if self.raw:
                self._shared = None
                self.pid = posix_spawn(self.argv, env, None)
            elif shared is not None:  # the owner's kept pipe: nothing to open or close
                prepared = self._prepared
                if prepared is not None and prepared.fits(env, shared.write_fd):
                    try:
                        self.pid = prepared()
                    except OSError:  # e.g. the executable moved: looked up again below
                        prepared.stale = True
                if self.pid is None:
                    self.pid = posix_spawn(self.argv, env, shared.write_fd)
                read_fd = shared.read_fd
            else:
                read_fd, write_fd = os.pipe()  # both close-on-exec; dup2 makes 1 and 2
                try:
                    self.pid = posix_spawn(self.argv, env, write_fd)
                except BaseException:
                    os.close(read_fd)
                    raise
                finally:
                    os.close(write_fd)
                os.set_blocking(read_fd, False)
        else:
            self._shared = None
            ident = resolve_identity(self.user, self.group)
            if ident.uid is not None and ident.name:
                env = dict(env)
                env.setdefault("USER", ident.name)
                env.setdefault("LOGNAME", ident.name)
                if ident.home:
                    env["HOME"] = ident.home
            out: Any = None if self.raw else subprocess.PIPE
            self._popen = subprocess.Popen(
                self.argv, env=env, cwd=self.cwd or None, stdin=subprocess.DEVNULL,
                stdout=out, stderr=None if self.raw else subprocess.STDOUT,
                process_group=0, user=ident.uid, group=ident.gid, extra_groups=ident.groups,
                close_fds=True, pass_fds=self.pass_fds,
            )
            self.pid = self._popen.pid
            if self._popen.stdout is not None:
                read_fd = self._popen.stdout.fileno()
                os.set_blocking(read_fd, False)
        self.started_at = time.monotonic()
        self._on_exit_cb = on_exit
        reaper.watch(self.pid, self._reaped)
        if read_fd is not None:
            self._fd = read_fd
            if watch_output:
                self.watch_output()
        return self.pid

    def watch_output(self) -> None:
        """Read (and log) the output as it comes, from the event loop."""
        if self._fd is not None and not self._watched:
            self._watched = True
            asyncio.get_running_loop().add_reader(self._fd, self._on_readable)

    def _reaped(self, waitstatus: int) -> None:
        """The reaper's callback: record the status, drain the pipe (so the tail is complete
        for health checks), then wake whoever waits."""
        self.waitstatus = waitstatus
        self.returncode = exit_code(waitstatus)
        if self._popen is not None:
            # tell Popen the child is gone so it never waits for it itself
            self._popen.returncode = os.waitstatus_to_exitcode(waitstatus)
        self._on_readable(final=True)
        if self._fd is not None and self._shared is None:
            self.watch_output()  # something it forked still holds the pipe: read on
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(waitstatus)
        if self._on_exit_cb is not None:
            cb, self._on_exit_cb = self._on_exit_cb, None
            cb(self)  # may take the kept pipe with it (adopt_output)
        if self._shared is not None:
            self.release_output()

    def release_output(self) -> None:
        """Give a kept pipe back to its owner once this run is over (its output was read
        at the exit): the last line without a newline is logged, as at end-of-file."""
        if self._shared is None:
            return
        self._shared = None
        if self._watched:
            self._watched = False
            asyncio.get_running_loop().remove_reader(self._fd)
        self._fd = None
        if self._buf:
            self._emit(self._buf)
            self._buf = b""
        if self._eof is not None:
            self._eof.set()

    def adopt_output(self, pipe: OutputPipe) -> bool:
        """Take the kept pipe ``pipe`` for good: something this run forked may still write
        to it, so it is read (and logged) until every writer is gone, then closed, as a
        pipe of its own. The owner closes its write end and uses a new pipe. False if this
        run does not hold ``pipe`` (already given back)."""
        if self._shared is not pipe or self._fd is None:
            return False
        self._shared = None
        pipe.read_fd = -1  # ours now: closed by _close_pipe, never by the owner
        self.watch_output()
        return True

    def exited(self) -> asyncio.Future[int]:
        """A future of the wait status, made on first use (a health check never needs one)."""
        assert self.pid is not None, "process not started"
        if self._exit is None:
            self._exit = asyncio.get_running_loop().create_future()
            if self.waitstatus is not None:
                self._exit.set_result(self.waitstatus)
        return self._exit

    # -- output -----------------------------------------------------------------------------
    def _on_readable(self, final: bool = False) -> None:
        if self._fd is None:
            return
        shared = self._shared
        while True:
            if final and shared is not None and not shared.pending():
                return  # a kept pipe is never at end-of-file: read until it is empty
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._close_pipe()
                return
            self._feed(chunk)
            if not final and len(chunk) < 65536:
                return

    def _feed(self, chunk: bytes) -> None:
        if self.capture:
            self._tail += chunk
            if len(self._tail) > TAIL_BYTES:
                del self._tail[: len(self._tail) - TAIL_BYTES]
        self._buf += chunk
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_LINE:
                    self._emit(self._buf)
                    self._buf = b""
                return
            line, self._buf = self._buf[:nl], self._buf[nl + 1:]
            self._emit(line)

    @property
    def _log(self) -> Any:
        """``log`` bound to our fields and pid, made when first needed: a check that prints
        nothing and exits in time never pays for it."""
        if self._bound is None:
            self._bound = log.bind(**self.fields, pid=self.pid)
        return self._bound

    def _emit(self, line: bytes) -> None:
        self._log.info(line.decode("utf-8", "replace").rstrip("\r"))

    def _close_pipe(self) -> None:
        if self._fd is None:
            return
        if self._shared is not None:  # not ours to close (its owner holds the write end)
            self.release_output()
            return
        if self._buf:
            self._emit(self._buf)
            self._buf = b""
        if self._watched:
            self._watched = False
            try:
                asyncio.get_running_loop().remove_reader(self._fd)
            except RuntimeError:
                pass
        if self._popen is not None and self._popen.stdout is not None:
            self._popen.stdout.close()
        elif self._popen is None:
            os.close(self._fd)  # a posix_spawn pipe: ours to close
        self._fd = None
        if self._eof is not None:
            self._eof.set()

    @property
    def output_tail(self) -> str:
        return self._tail.decode("utf-8", "replace").strip()

    # -- state ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.pid is not None and self.waitstatus is None

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the whole process group; False if nothing was there."""
        if self.pid is None:
            return False
        try:
            os.killpg(self.pid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            if self.running:  # group gone but leader not yet reaped: signal the leader
                try:
                    os.kill(self.pid, sig)
                    return True
                except OSError:
                    return False
            return False

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process itself (control: `job signal`)."""
        if self.pid is not None and self.running:
            os.kill(self.pid, sig)

    def group_alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            os.killpg(self.pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    # -- waiting ----------------------------------------------------------------------------
    async def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit; at ``timeout`` SIGKILL the group (counts as failed)."""
        exit_fut = self.exited()
        if timeout is not None and timeout > 0:
            if not await self._exits_within(timeout):
                self.time_out(timeout)
                await asyncio.shield(exit_fut)
        else:
            await asyncio.shield(exit_fut)
        return self._settled()

    def time_out(self, timeout: float) -> None:
        """The process outlived ``timeout``: say so and SIGKILL its group (it counts as
        failed). ContainerPilot's line ("<name> timeout after <d>: '[args]'"), which log
        scrapers and its tests match, then what we do about it."""
        self.timed_out = True
        name = self.fields.get("job") or self.fields.get("check") or self.argv[0]
        after = f"{timeout * 1000:g}ms" if timeout < 1 else f"{timeout:g}s"
        self._log.warning(f"{name} timeout after {after}: '[{' '.join(self.argv[1:])}]'"
                          "; timeout: killing process group", timeout=timeout)
        self.signal_group(signal.SIGKILL)

    async def _exits_within(self, timeout: float) -> bool:
        """Wait for the exit at most ``timeout``; True if it came. One waiter woken by the
        exit future's callback or a timer. A cancelled caller leaves the exit future
        alone, as ``shield`` did."""
        exit_fut = self.exited()
        if exit_fut.done():
            return True
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        exit_fut.add_done_callback(wake)
        timer = loop.call_later(timeout, wake)
        try:
            await waiter
        finally:
            timer.cancel()
            exit_fut.remove_done_callback(wake)
        return exit_fut.done()

    def _settled(self) -> int:
        """The exit code once the process was reaped."""
        assert self.returncode is not None
        return self.returncode

    async def stop(self, sig: int = SIGTERM, timeout: float = 5.0,
                   kill_wait: float = 5.0) -> int | None:
        """``sig`` to the group; SIGKILL to the group at ``timeout``; returns the exit code.

        Members of the group still alive after the leader has exited are killed too, at the
        same deadline, so a stop never leaves a half-stopped job behind."""
        if self.pid is None:
            return None
        exit_fut = self.exited()
        deadline = time.monotonic() + max(timeout, 0.0)
        if self.running or self.group_alive():
            self.signal_group(sig)
        if self.running:
            try:
                await asyncio.wait_for(asyncio.shield(exit_fut),
                                       max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                self._log.warning("stop timeout: sending SIGKILL to process group",
                                  timeout=timeout, signal=signal.Signals(sig).name)
                self.signal_group(signal.SIGKILL)
                try:
                    await asyncio.wait_for(asyncio.shield(exit_fut), kill_wait)
                except TimeoutError:
                    self._log.error("process did not die after SIGKILL")
                    return None
        while self.group_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.group_alive():
            self.signal_group(signal.SIGKILL)
        return self.returncode

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)

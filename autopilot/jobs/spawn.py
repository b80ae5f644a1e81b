"""A health check's ``posix_spawn`` with its arguments prepared once, not at every check.

``os.posix_spawn`` builds everything at each call: the environment encoded and joined into
``KEY=value`` strings (30-odd of them), the argument vector, a file-actions object whose
three actions glibc checks against the descriptor limit (five ``prlimit64`` calls) and a
spawn-attributes object; then it frees them all. A health check spawns the same command
with the same environment and the same kept output pipe every interval, so a checker keeps
one `PreparedSpawn` and calls libc's ``posix_spawn`` with it directly: 15-20 µs less of the
supervisor's CPU per check here (`bench/check_cycle.py`, ``prepared`` against
``kept-pipe``), the kernel's part (the ``clone3``, the vfork wait, the stack) unchanged.

The child is the same as ``process.posix_spawn`` makes it: stdin from ``/dev/null``,
stdout and stderr to the kept pipe, its own process group, ``SIGPIPE``/``SIGXFSZ`` at their
defaults. C is reached through `autopilot.libc` (``_ctypes`` alone, ``posix_spawn``
looked up in the process itself: no ``ctypes`` package, no ``find_library``). Where that
is not possible (no ``_ctypes``, a libc without the symbols) `prepare` returns None and
the caller uses ``os.posix_spawn``. The GIL is held during the call, as
``os.posix_spawn`` holds it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from typing import Any

#: bytes for glibc's opaque ``posix_spawn_file_actions_t`` (80 on x86-64) and
#: ``posix_spawnattr_t`` (336): room to spare on any architecture
_OPAQUE = 1024
_SETPGROUP = 0x02  # POSIX_SPAWN_SETPGROUP (glibc)
_SETSIGDEF = 0x04  # POSIX_SPAWN_SETSIGDEF
_SIGSET = 128  # sizeof(sigset_t) in glibc

_lib: Any = None  # the C functions, looked up on first use (False: unavailable)


def _libc() -> Any:
    global _lib
    if _lib is None:
        try:
            _lib = _Lib()
        except (ImportError, AttributeError, OSError, TypeError):
            _lib = False
    return _lib


class _Lib:
    """``posix_spawn`` and its helpers from the process's own libc, through ``_ctypes``."""

    def __init__(self) -> None:
        import _ctypes

        from autopilot import libc

        class CharP(_ctypes._SimpleCData):
            _type_ = "z"

        class Byte(_ctypes._SimpleCData):
            _type_ = "B"

        def func(name: str) -> Any:
            # the GIL stays held (as os.posix_spawn holds it): no release and re-take
            return libc.function(name, keep_gil=True)

        self.Int, self.CharP, self.Byte = libc.Int, CharP, Byte
        self.Array = _ctypes.Array
        self.byref = _ctypes.byref
        self.posix_spawn = func("posix_spawn")
        self.fa_init = func("posix_spawn_file_actions_init")
        self.fa_destroy = func("posix_spawn_file_actions_destroy")
        self.fa_addopen = func("posix_spawn_file_actions_addopen")
        self.fa_adddup2 = func("posix_spawn_file_actions_adddup2")
        self.attr_init = func("posix_spawnattr_init")
        self.attr_destroy = func("posix_spawnattr_destroy")
        self.attr_setflags = func("posix_spawnattr_setflags")
        self.attr_setpgroup = func("posix_spawnattr_setpgroup")
        self.attr_setsigdefault = func("posix_spawnattr_setsigdefault")
        self.sigemptyset = func("sigemptyset")
        self.sigaddset = func("sigaddset")

    def buffer(self, size: int) -> Any:
        return type("Opaque", (self.Array,), {"_type_": self.Byte, "_length_": size})()

    def strings(self, items: list[bytes]) -> Any:
        """A NULL-terminated ``char *[]`` of ``items`` (the array keeps them alive)."""
        kind = type("Strings", (self.Array,), {"_type_": self.CharP,
                                               "_length_": len(items) + 1})
        return kind(*items, None)


class PreparedSpawn:
    """One command, environment and output descriptor, ready to spawn again and again.
    Made by `prepare`; compare ``env`` (by identity) and ``fd`` before reusing it, and
    `close` it when done (libc's file actions hold memory of their own)."""

    def __init__(self, lib: _Lib, executable: str, argv: list[str], env: Mapping[str, str],
                 fd: int, restore: tuple[int, ...]) -> None:
        self.env = env
        self.fd = fd
        self.executable = executable
        self.stale = False  # a spawn failed: prepare again (the executable may have moved)
        self._lib = lib
        self._path = os.fsencode(executable)
        self._argv = lib.strings([os.fsencode(a) for a in argv])
        self._envp = lib.strings([os.fsencode(k) + b"=" + os.fsencode(v)
                                  for k, v in env.items()])
        self._pid = lib.Int()
        self._actions = lib.buffer(_OPAQUE)
        self._attr = lib.buffer(_OPAQUE)
        byref = lib.byref
        self._actions_ref, self._attr_ref, self._pid_ref = (
            byref(self._actions), byref(self._attr), byref(self._pid))
        self._live = False
        _check(lib.fa_init(self._actions_ref))
        try:
            _check(lib.attr_init(self._attr_ref))
        except OSError:
            lib.fa_destroy(self._actions_ref)
            raise
        self._live = True
        try:
            _check(lib.fa_addopen(self._actions_ref, 0, os.devnull.encode(), os.O_RDONLY, 0))
            _check(lib.fa_adddup2(self._actions_ref, fd, 1))
            _check(lib.fa_adddup2(self._actions_ref, fd, 2))
            sigset = lib.buffer(_SIGSET)
            _check(lib.sigemptyset(byref(sigset)))
            for sig in restore:
                _check(lib.sigaddset(byref(sigset), int(sig)))
            _check(lib.attr_setsigdefault(self._attr_ref, byref(sigset)))
            _check(lib.attr_setpgroup(self._attr_ref, 0))
            _check(lib.attr_setflags(self._attr_ref, _SETPGROUP | _SETSIGDEF))
        except OSError:
            self.close()
            raise

    def fits(self, env: Mapping[str, str], fd: int) -> bool:
        """Still usable for a spawn with ``env`` (the same dict) writing to ``fd``."""
        return not self.stale and self.env is env and self.fd == fd

    def __call__(self) -> int:
        """Spawn it; the child's pid. OSError as ``os.posix_spawn`` raises it."""
        if not self._live:
            raise RuntimeError("spawn closed")
        err = self._lib.posix_spawn(self._pid_ref, self._path, self._actions_ref,
                                    self._attr_ref, self._argv, self._envp)
        if err:
            raise OSError(err, os.strerror(err), self.executable)
        return self._pid.value

    def close(self) -> None:
        if self._live:
            self._live = False
            self._lib.fa_destroy(self._actions_ref)
            self._lib.attr_destroy(self._attr_ref)

    def __del__(self) -> None:
        self.close()


def _check(rc: int) -> None:
    if rc:  # these return an error number (sigemptyset/sigaddset: -1 and errno)
        code = rc if rc > 0 else errno.EINVAL
        raise OSError(code, os.strerror(code))


def prepare(executable: str, argv: list[str], env: Mapping[str, str], fd: int,
            restore: tuple[int, ...]) -> PreparedSpawn | None:
    """A `PreparedSpawn`, or None when libc cannot be called here (use ``os.posix_spawn``)."""
    lib = _libc()
    if not lib:
        return None
    try:
        return PreparedSpawn(lib, executable, argv, env, fd, restore)
    except (OSError, TypeError, ValueError):
        return None

"""The few C functions autopilot calls, looked up in the process's own libc.

Why not the ``ctypes`` package: its type classes cost 140 KB in every supervisor, and
``ctypes.util.find_library`` runs ``ldconfig -p`` in a child process. The C library is
already loaded in the interpreter, so ``dlopen(NULL)`` finds its symbols, and ``_ctypes``
(the C half of ctypes) is all that is needed. Callers: `autopilot.init.set_subreaper`
(``prctl``) and `autopilot.jobs.spawn` (``posix_spawn`` prepared once per health checker).
Importing this module raises ImportError where ``_ctypes`` is missing; `function` raises
AttributeError for a symbol the libc lacks: callers fall back.
"""

from __future__ import annotations

import _ctypes
from typing import Any


class Int(_ctypes._SimpleCData):
    """C ``int``: what every function here returns."""

    _type_ = "i"


class _Process:
    """The running process as a library (``dlopen(NULL)``): libc's symbols are in it."""

    _handle = _ctypes.dlopen(None, 0)


_kinds: dict[int, type] = {}


def function(name: str, *, keep_gil: bool = False) -> Any:
    """The C function ``name`` returning an int. ``keep_gil``: called without releasing
    the GIL (``posix_spawn``, as ``os.posix_spawn`` does); otherwise the GIL is released
    during the call and ``errno`` is kept for ``_ctypes.get_errno``."""
    flags = _ctypes.FUNCFLAG_CDECL | (
        _ctypes.FUNCFLAG_PYTHONAPI if keep_gil else _ctypes.FUNCFLAG_USE_ERRNO)
    kind = _kinds.get(flags)
    if kind is None:
        kind = _kinds[flags] = type("CFunction", (_ctypes.CFuncPtr,),
                                    {"_flags_": flags, "_restype_": Int})
    return kind((name, _Process()))

"""Keep the ``ssl`` module out of a supervisor whose config never speaks TLS.

``asyncio`` imports ``ssl`` as it loads (``base_events``, ``selector_events``, ``sslproto``:
each ``try: import ssl``), and ``ssl`` with OpenSSL's tables is about 4 MB of resident memory:
a fifth of a supervisor that never opens a TLS connection (no Consul over https). So the
``autopilot run`` entrypoint calls `defer` before anything imports ``asyncio``: the import
then fails softly, and asyncio binds ``ssl = None`` (a state it supports: plain sockets work
as usual).

Whatever needs TLS calls `require` first (the Consul transport with an https address, the
py-consul path, the catalog server): it imports ``ssl`` for real and hands it to the
``asyncio`` modules that bound ``None``, so ``open_connection(ssl=ctx)`` works as if ``ssl``
had been there from the start. A reload that switches Consul to https goes the same way.
"""

from __future__ import annotations

import sys
from types import ModuleType

#: the asyncio modules that bind ``ssl`` at import (CPython 3.11-3.13)
_ASYNCIO_USERS = ("asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto")


def defer() -> bool:
    """Make ``import ssl`` fail until `require` is called; False (no effect) when ``ssl``
    is already loaded."""
    if "ssl" in sys.modules:
        return sys.modules["ssl"] is None
    sys.modules["ssl"] = None  # type: ignore[assignment]  # the documented import blocker
    return True


def deferred() -> bool:
    """Is ``ssl`` blocked by `defer` right now?"""
    return "ssl" in sys.modules and sys.modules["ssl"] is None


def require() -> ModuleType:
    """The ``ssl`` module, imported now if `defer` kept it out, and given to the ``asyncio``
    modules loaded meanwhile."""
    if deferred():
        del sys.modules["ssl"]
    import ssl

    for name in _ASYNCIO_USERS:
        mod = sys.modules.get(name)
        if mod is not None and getattr(mod, "ssl", ssl) is None:
            mod.ssl = ssl  # type: ignore[attr-defined]
            if name == "asyncio.sslproto":
                mod.SSLAgainErrors = (ssl.SSLWantReadError,  # type: ignore[attr-defined]
                                      ssl.SSLSyscallError)
    return ssl

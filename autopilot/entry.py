"""The one way an entry point starts the supervisor: keep ``ssl`` and ``inspect`` out first.

Every container pays for what its supervisor imports. ``asyncio`` loads ``ssl`` (4 MB) and
``inspect`` with ``ast`` and ``dis`` (0.95 MB) as it loads, and a supervisor needs neither
unless its Consul speaks TLS or something reads ``inspect`` (`autopilot.lazyssl`,
`autopilot.lazyinspect`). Both blockers must be in place *before* ``autopilot.supervisor``
(and with it ``asyncio``) is imported, so an entry point that imported the supervisor itself
would silently pay about 5 MB. ``autopilot run`` (its fast path in ``autopilot/__main__.py``
and the click verb in ``autopilot/commands.py``) and ``containerpilot``
(``autopilot/containerpilot.py``) all come through `supervise`;
tests/unit/test_entry.py fails if another module imports ``run_supervisor``.

This module imports nothing at its top: it is loaded before anything else of autopilot's.
"""

from __future__ import annotations


def supervise(config_path: str, reload_all: bool = False) -> int:
    """Run the supervisor on ``config_path`` until shutdown; its exit status.
    ``reload_all``: see ``Supervisor.reload_all``."""
    from autopilot import lazyinspect, lazyssl

    lazyssl.defer()  # before asyncio loads: ssl only for Consul over https
    lazyinspect.defer()  # likewise: inspect, ast and dis only once something reads them
    from autopilot.supervisor import run_supervisor

    return run_supervisor(config_path, reload_all=reload_all)

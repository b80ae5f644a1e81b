"""Request counts of the control socket, kept per supervisor.

The control server counts and telemetry exports (`containerpilot_control_http_requests`).
The counts hang off the supervisor object rather than the server so that they survive a
reload that replaces the control server (a Prometheus counter must not go backwards
while the process lives).
"""

from __future__ import annotations

import collections
import weakref
from typing import Any

_BY_OWNER: weakref.WeakKeyDictionary[Any, collections.Counter] = weakref.WeakKeyDictionary()
_FALLBACK: dict[int, collections.Counter] = {}


def request_counts(owner: Any) -> collections.Counter:
    """The Counter of ``(code, path)`` pairs for this supervisor (created on first use)."""
    try:
        return _BY_OWNER.setdefault(owner, collections.Counter())
    except TypeError:  # not weak-referenceable or not hashable: key by identity
        return _FALLBACK.setdefault(id(owner), collections.Counter())

"""The local lease: how long this node may still believe it is the leader.

The catalog invalidates a session no earlier than its TTL after the last renew it
received, and that renew was received *after* we sent it. So counting from the moment a
renew (or the acquire) was *sent*, ``ttl - margin`` on our own monotonic clock ends before
the catalog can hand the lock to anyone else (and the lock-delay adds a further window).
The monotonic clock keeps running while the process is frozen (SIGSTOP), so a resumed
leader sees at once that its lease has passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def default_margin(ttl: float) -> float:
    """Room for a demote hook before the catalog may invalidate the session."""
    return min(max(ttl * 0.2, 0.5), 5.0, ttl / 4)  # a short lease keeps 3/4 of itself


class Lease:
    def __init__(self, ttl: float, margin: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.margin = default_margin(ttl) if margin is None else margin
        self.clock = clock
        self.deadline: float | None = None  # None: no lease held
        self.granted_at: float | None = None  # when the last counted renew was sent

    def grant(self, sent_at: float) -> bool:
        """Record a successful acquire/renew that was sent at ``sent_at``.

        Refused (returns False) if the lease already ran out before the answer was
        processed: a late success cannot revive a lease we may have acted on losing.
        """
        now = self.clock()
        if self.deadline is not None and now >= self.deadline:
            return False
        self.deadline = sent_at + self.ttl - self.margin
        self.granted_at = sent_at
        return now < self.deadline

    def extend(self, until: float) -> bool:
        """Move a still-valid deadline later (never earlier, never reviving a lapsed one):
        used while the catalog reports that it has no leader, when nobody can take the
        lock. True if the lease is valid afterwards."""
        if not self.valid():
            return False
        assert self.deadline is not None
        self.deadline = max(self.deadline, until)
        return True

    def start(self, sent_at: float) -> bool:
        """A fresh lease from an acquire sent at ``sent_at``."""
        self.deadline = None
        return self.grant(sent_at)

    def clear(self) -> None:
        self.deadline = None
        self.granted_at = None

    def valid(self) -> bool:
        return self.deadline is not None and self.clock() < self.deadline

    def remaining(self) -> float:
        if self.deadline is None:
            return 0.0
        return max(0.0, self.deadline - self.clock())

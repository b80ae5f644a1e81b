"""Where a failover's time goes: one trial's phases, read from the nodes' autopilot logs.

Every supervisor logs each election step with a UTC timestamp (structlog, ns precision),
and the workload knows when the fault was injected and when the new primary first
acknowledged a write. Between the two, in order:

  detection   fault -> the first follower sees the lock leave the old primary (SIGKILL: the
              check's TTL lapses and the catalog invalidates the session; SIGTERM: the
              demote hook ran and the lock was released)
  election    -> the winner acquires the lock (detach and position hooks, candidacy posts,
              the lock-delay after an invalidated session)
  promote     -> the winner's promote hook has run (`running hook hook=promote` to the next
              hook it starts, `identity`, or to `elected` without one), or the first write
              acknowledged by the winner if that came first (the hook opens writes, then
              re-points the replicas)
  client      -> the first acknowledged write on the new primary (re-discovery by the
              client, and in no-loss mode a replica attached to confirm WAIT 1)
  announce    promote done -> `elected` (identity hook, lock value marked promoted): not on
              the write path (the promote hook re-points the replicas itself), so it is shown
              beside the others and not counted in their sum

A phase whose log line is missing is None; the phases then no longer add up to the total.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z (.*)$")
PHASES = ("detection", "election", "promote", "client", "announce")


def _wall(stamp: str, frac: str | None) -> float:
    base = datetime.fromisoformat(stamp + "+00:00").timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def events(log: Path, since: float) -> list[tuple[float, str]]:
    """(wall time, message) of a node's autopilot log lines at or after `since`."""
    out = []
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        t = _wall(m.group(1), m.group(2))
        if t >= since:
            out.append((t, m.group(3)))
    return out


def _first(evs: list[tuple[float, str]], needle: str, after: float = 0.0) -> float | None:
    return next((t for t, msg in evs if needle in msg and t >= after), None)


def breakdown(logs: dict[str, Path], fault_wall: float, new_primary: str | None,
              first_ack_wall: float | None) -> dict[str, float | None]:
    """Phases of one failover, in seconds (see the module docstring)."""
    per_node = {name: events(path, fault_wall - 0.05) for name, path in logs.items()}
    followers = [n for n in per_node if n != new_primary]
    seen = [t for n in [*followers, new_primary] if n in per_node
            for t in [_first(per_node[n], "the lock left the leader")] if t is not None]
    detected = min(seen) if seen else None
    won = per_node.get(new_primary or "", [])
    acquired = _first(won, "acquired the lock", fault_wall)
    promote_start = _first(won, "hook=promote", acquired or fault_wall)
    elected = _first(won, " elected epoch=", promote_start or fault_wall)
    promote_end = _first(won, "hook=identity", promote_start or fault_wall) if promote_start \
        else None
    if promote_end is None or (elected is not None and promote_end > elected):
        promote_end = elected
    if promote_end is not None and first_ack_wall is not None and acquired is not None \
            and acquired <= first_ack_wall < promote_end:
        promote_end = first_ack_wall  # writes opened before the hook ended (it re-points)

    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 3)

    return {
        "detection": span(fault_wall, detected),
        "election": span(detected, acquired),
        "promote": span(acquired, promote_end),
        "client": span(promote_end, first_ack_wall),
        "announce": span(promote_end, elected),
    }

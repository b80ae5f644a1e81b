"""The highest fencing epoch a member has seen, kept in a small file.

The catalog's LockIndex starts again at 1 when the catalog loses its state, so it cannot be
the fencing token by itself: a replica that refuses any leader older than the last one it
followed would then refuse every new leader. The winner of an election therefore writes
its own ``epoch`` in the lock value, one more than every epoch it has seen, and every
member remembers the highest one in this file, so a restarted supervisor (or a whole
cluster after a catalog wipe) still counts upwards.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from autopilot.logs import get_logger

log = get_logger("autopilot.election")

DEFAULT_DIR = "/var/lib/autopilot"
ENV_DIR = "AUTOPILOT_STATE_DIR"


def state_path(state_dir: str | None, lock_key: str, service_id: str) -> Path:
    """``<stateDir>/election-<lock key>-<service id>.json`` (unsafe characters to ``_``).
    Without ``stateDir``: ``$AUTOPILOT_STATE_DIR``, else /var/lib/autopilot."""
    base = state_dir or os.environ.get(ENV_DIR) or DEFAULT_DIR
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"election-{lock_key}-{service_id}")
    return Path(base) / f"{name}.json"


class EpochStore:
    """``seen`` is the highest epoch known to be in use (a holder's, a candidate's post, or
    this file's); ``note`` raises it and persists it first.

    An acquire attempt ``claim``s its epoch instead: the file holds it before the attempt
    (should the attempt win and this process die, the epoch must never be written twice),
    and the next attempt goes past it (``next_epoch``), but ``seen`` stays. ``seen`` is
    the epoch a member's candidacy rounds and posts carry, and a round counts only posts of
    at least its own epoch: a member whose lost attempts raised it (at a simultaneous start
    a loser tries again before its watch shows the winner) ignored its peers' posts at the
    next failover or hand-over and waited candidacyTimeout for them (a 2 s hand-over write
    gap, chaos S5), or ran without seeing that one of them was ahead."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = 0
        self.claimed = 0  # the highest epoch this process tried to acquire with
        self._warned = False
        try:
            data = json.loads(path.read_text())
            epoch = data.get("epoch") if isinstance(data, dict) else None
            if isinstance(epoch, int) and epoch > 0:
                # "epoch": the highest seen or claimed; "seen" apart when a claim went past
                # it (a file without it, older or not: everything counts as seen)
                seen = data.get("seen", epoch)
                self.seen = seen if isinstance(seen, int) and 0 <= seen <= epoch else epoch
                self.claimed = epoch
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("epoch state unreadable; starting from the catalog's",
                        path=str(path), error=str(exc))

    def note(self, epoch: int) -> bool:
        """Remember ``epoch`` if it is higher than any seen; True if it was."""
        if epoch <= self.seen:
            return False
        self.seen = epoch
        self._save()
        return True

    def next_epoch(self, holder_epoch: int = 0) -> int:
        """The epoch for the next acquire attempt: past every one seen or claimed."""
        return max(self.seen, self.claimed, holder_epoch) + 1

    def claim(self, epoch: int) -> None:
        """Persist ``epoch`` before an acquire attempt uses it, without raising ``seen``."""
        if epoch <= max(self.seen, self.claimed):
            return
        self.claimed = epoch
        self._save()

    def _save(self) -> None:
        """Atomic: a temporary file, fsync, rename. A failure is logged once and the epoch
        lives on in memory (it is then lost with the process; see docs/stateful.md)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                top = max(self.seen, self.claimed)
                f.write(json.dumps({"epoch": top} if top == self.seen else
                                   {"epoch": top, "seen": self.seen}))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.error("cannot persist the election epoch (set election.stateDir)",
                          path=str(self.path), error=str(exc))

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
    """``seen`` is the highest epoch known; ``note`` raises it and persists it first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = 0
        self._warned = False
        try:
            data = json.loads(path.read_text())
            epoch = data.get("epoch") if isinstance(data, dict) else None
            if isinstance(epoch, int) and epoch > 0:
                self.seen = epoch
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

    def _save(self) -> None:
        """Atomic: a temporary file, fsync, rename. A failure is logged once and the epoch
        lives on in memory (it is then lost with the process; see docs/stateful.md)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                f.write(json.dumps({"epoch": self.seen}))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.error("cannot persist the election epoch (set election.stateDir)",
                          path=str(self.path), error=str(exc))

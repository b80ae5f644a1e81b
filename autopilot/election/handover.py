"""Hand-over to a named successor: a primary stopping on SIGTERM says who takes over.

Without it a hand-over is a failover without detection: every follower detaches, runs its
position hook and posts, and the best one acquires once all have posted (two or three hook
runs and catalog round trips, most of a hand-over's write gap). A stopping primary often
knows the answer already: once its `demote` hook stopped the service cleanly, the replicas
that were streaming hold everything it wrote. With an election `successor` hook, it asks
after `demote` (only on shutdown) and releases the lock with the successor named in the
lock's value (``"successor"``). Then, for ``candidacyTimeout`` after the release:

- the member named acquires at once, without detach, position hook or candidacy post (its
  `promote` hook still makes its own checks);
- the others neither detach (the old primary was demoted to its end: nothing streams from
  it any more) nor run; they follow the successor once it is promoted, as usual.

The stopping primary may also hand its successor what it knows, so that the successor's
promote hook need not ask the catalog or its peers on the write gap: lines ``KEY=VALUE``
printed by the successor hook before the name travel in the lock value (``"handover"``)
and reach the named member's promote hook, and only that one, as
``AUTOPILOT_HANDOVER_<KEY>``, with ``AUTOPILOT_HANDOVER_FROM`` = the old holder's service
ID. (The PostgreSQL hook passes its members, its sync set and its shutdown checkpoint.)

Nothing else changes: if the successor does not take the lock in that window (it died, its
check failed, its promote hook refused), the others run a normal candidacy. Fencing is
untouched: the value is written only by a release, after the demote hook, and acquiring
still needs a free key and a live session.
"""

from __future__ import annotations

import re
import time

from autopilot.election.base import ElectionState, log
from autopilot.jobs.hooks import HookResult

#: a note line of the successor hook (``KEY=VALUE``); a successor's name never has a "="
NOTE = re.compile(r"^([A-Za-z][A-Za-z0-9_]{0,63})=(.*)$")
NOTES_PREFIX = "AUTOPILOT_HANDOVER_"


def successor_answer(output: str) -> tuple[str, dict[str, str]]:
    """The successor hook's output: (the name on its last line, the ``KEY=VALUE`` notes
    before it, keys upper-cased). A last line that is itself a note names nobody."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if not lines or NOTE.match(lines[-1]):
        return "", {}
    notes = {}
    for ln in lines[:-1]:
        m = NOTE.match(ln)
        if m and "\0" not in m.group(2):
            notes[m.group(1).upper()] = m.group(2)
    return lines[-1], notes


def _read_file(argv: list[str]) -> HookResult | None:
    """A successor hook that is ``["cat", FILE]`` (what a demote hook chose, written to a
    file) is read in-process, as cat would print it: one process start less between the
    demote and the release, while no node takes writes. None: run the hook."""
    if len(argv) != 2 or argv[0] != "cat" or argv[1].startswith("-"):
        return None
    try:
        with open(argv[1], encoding="utf-8", errors="replace") as f:
            return HookResult(0, f.read(65536))
    except OSError as exc:
        return HookResult(1, f"cat: {argv[1]}: {exc.strerror}")


def handover_env(info: dict) -> dict[str, str]:
    """The named successor's promote hook environment from a released lock value."""
    notes = info.get("handover")
    env = {f"{NOTES_PREFIX}{k}": v for k, v in (notes or {}).items()
           if isinstance(k, str) and NOTE.match(f"{k}=") and isinstance(v, str)
           and "\0" not in v} if isinstance(notes, dict) else {}
    env[f"{NOTES_PREFIX}FROM"] = str(info.get("service_id", ""))
    return env


class HandOver(ElectionState):
    """Part of :class:`Election`: naming a successor (leader) and honouring one (followers)."""

    #: while the named successor acquires and promotes: its promote hook's
    #: AUTOPILOT_HANDOVER_* environment (what the old primary handed over)
    _handover_env: dict[str, str] | None = None

    async def _successor(self) -> tuple[str, dict[str, str]] | None:
        """The successor hook's answer (a service ID, node name or address:port, and the
        notes for it), or None."""
        if not self.ecfg.successor:
            return None
        result = _read_file(self.ecfg.successor)
        if result is None:
            result = await self._hook("successor", self.ecfg.successor, "replica", None)
        name, notes = successor_answer(result.output) if result.ok else ("", {})
        if not name:
            log.info("no successor named: the members run a candidacy", job=self.job,
                     rc=result.rc, timed_out=result.timed_out)
            return None
        return name, notes

    def _release_value(self, successor: tuple[str, dict[str, str]] | None) -> dict | None:
        """The lock's value after our release: the last one we held, plus the successor
        (and what it is handed, if anything)."""
        if not successor:
            return None
        name, notes = successor
        h = self.holder
        info = dict(h.info) if h is not None and h.session == self.session else {}
        info.pop("handover", None)
        info.update({"successor": name, "released_at": round(time.time(), 3)})
        if notes:
            info["handover"] = notes
        return info

    def _handover_to(self) -> str | None:
        """While the lock is free after a hand-over that named a successor (for at most
        candidacyTimeout since we saw it released): that successor; else None."""
        h = self.holder
        if h is None or h.held:
            return None
        name = h.info.get("successor")
        if not isinstance(name, str) or not name or not self._free_since:
            return None
        if time.monotonic() - self._free_since > max(self.ecfg.candidacy_timeout, 0.5):
            return None
        return name

    def _named_me(self, name: str) -> bool:
        facts = self.ctx.facts.get(self.job, {})
        me = {self.service_id, self.ctx.hostname}
        address, port = facts.get("address"), facts.get("port") or self.cfg.port
        if address and port:
            me.add(f"{address}:{port}")
        return name in me

    async def _take_over(self, name: str) -> bool:
        """Followers while a successor is named. True: this step is done (we acquired as the
        successor, or we wait for it); False: nothing named, carry on."""
        if self._named_me(name):
            log.info("named successor of a hand-over: acquiring without a candidacy",
                     job=self.job)
            # what the old primary handed over, for this promote hook only (the value is
            # replaced by ours as soon as we acquire)
            self._handover_env = handover_env(self.holder.info if self.holder else {})
            try:
                await self._try_acquire()
            finally:
                self._handover_env = None
            return True
        # wait for the successor; look again when the hand-over window ends
        self._poll_at = self._free_since + max(self.ecfg.candidacy_timeout, 0.5) + 0.01
        return True

    def _skip_detach(self) -> bool:
        """A hand-over named a successor: the old primary was demoted to its end (the value
        is written only then), nothing streams from it; detaching now would only undo the
        successor re-pointing us. Forget the old leader without running the detach hook."""
        name = self._handover_to()
        if name is None:
            return False
        self.announced = None
        self._publish_role("replica", None)
        # (the same words as a detach: bench/failover/breakdown.py starts the election there)
        log.info("the lock left the leader we followed: handed over to a successor, "
                 "not detaching", job=self.job, leader=self._last_leader, successor=name)
        return True


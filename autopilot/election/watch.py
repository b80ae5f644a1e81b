"""Watching the election key and following its holder.

The observers only record what they saw (the key's holder, a health or maintenance event)
and wake the decision loop; a replica learns who leads, publishes leaderChanged, and
detaches as soon as the lock leaves the holder it followed.
"""

from __future__ import annotations

import time

from autopilot import events as ev
from autopilot.aio import Backoff
from autopilot.election import lock
from autopilot.election.base import CALL_TIMEOUT, WATCH_WAIT, ElectionState, last_line, log


def reported_position(output: str) -> int | None:
    """The position a detach hook reported: its last non-empty line is ``position=N``
    (N a non-negative integer), else None (the position hook then runs)."""
    line = last_line(output)
    if line.startswith("position="):
        value = line[len("position="):].strip()
        if value.isdigit():
            return int(value)
    return None


class Watching(ElectionState):
    """Part of :class:`Election`: the key watch, the event observer, following."""

    #: the epoch of the leader we followed last (``_last_leader``) when we began to follow it
    _last_leader_epoch = 0
    #: ``_last_leader`` when we saw it release the lock naming a successor (a hand-over);
    #: forgotten when we follow a leader again (rounds.py does not wait for it)
    _handed_over_by: str | None = None
    _first_read = False  # the watch read the key at least once since we started
    #: the promoted holder (its identity) the key named at that first read, if any
    _born_holder: tuple | None = None
    #: since this supervisor started we saw a holder promoted that was not already
    #: promoted at our first read: a leader alive during our own lifetime (the holder
    #: found at the first read may be a dead primary whose session has not lapsed yet)
    _saw_live_leader = False

    async def _events(self) -> None:
        assert self._sub is not None
        while not self.closed:
            event = await self._sub.get()
            if event.source == self.job:
                if event.code == ev.HEALTHY:
                    if self.session is None:
                        self._create_retry = 0.0  # the check just passed: try right away
                    self.healthy = True
                elif event.code in (ev.UNHEALTHY, ev.STOPPING, ev.STOPPED, ev.EXIT_FAILED,
                                    ev.EXIT_SUCCESS):
                    self.healthy = False
                    self._detach_position = None  # the service may come back with other data
                else:
                    continue
                self._wake.set()
            elif event.source == ev.GLOBAL and event.code in (ev.ENTER_MAINTENANCE,
                                                              ev.EXIT_MAINTENANCE):
                self.maintenance = event.code == ev.ENTER_MAINTENANCE
                self._wake.set()

    async def _watch(self) -> None:
        """Blocking queries on the election key (the shared poller, discovery/poll.py);
        records its holder.

        The poller applies Consul's index rules: an index that goes backwards resets to 0,
        a failed query is followed by a plain read, and the registration resets every query
        at once when it finds that the catalog lost our service (a wipe), so the watch never
        waits out an index the new catalog has not reached. Its retries here are short
        (0.1 s doubling to 0.5 s): one key per member, and a primary must learn quickly
        that the lock is gone."""
        from autopilot.discovery.poll import BlockingQuery

        assert self.ctx.consul is not None
        query = BlockingQuery(self.ctx.consul, f"/v1/kv/{self.lock_key}", wait=WATCH_WAIT,
                              timeout=CALL_TIMEOUT, retry=Backoff(0.1, 0.5))
        seen = 0  # the highest index read since the catalog last went backwards
        try:
            while not self.closed:
                fresh = query.index == 0  # a plain read: the catalog's state right now
                try:
                    resp = await query.poll()
                except Exception as exc:  # noqa: BLE001 - unreachable catalog: the poller retries
                    log.warning("election key watch failed", job=self.job,
                                error=str(exc) or repr(exc))
                    continue
                holder = None
                if resp.code == 200:
                    entries = resp.json() or []
                    holder = lock.parse_entry(entries[0] if entries else None)
                backwards = resp.index < seen
                if backwards:
                    log.warning("catalog index went backwards: the catalog lost its state",
                                job=self.job, index=resp.index, before=seen)
                self._observe(resp.index, holder, force=backwards or fresh)
                seen = resp.index
        finally:
            query.close()

    def _observe(self, idx: int, holder: lock.Holder | None, *, force: bool = False) -> None:
        if idx < self.holder_index and not force:
            return  # older than what we already know (our own post-acquire read)
        self.holder_index = idx
        self.watch_ok = True
        live = holder.identity() if holder is not None and holder.promoted else None
        if not self._first_read:
            self._first_read, self._born_holder = True, live
        elif live is not None and live != self._born_holder:
            self._saw_live_leader = True  # (rounds.py: no restart round any more)
        if (holder is not None and not holder.held and holder.info.get("successor")
                and self._last_leader
                and holder.info.get("service_id") == self._last_leader):
            self._handed_over_by = self._last_leader  # it left on purpose (rounds.py)
        if holder is not None and holder.held:
            self.epochs.note(holder.epoch)
            if holder.promoted:
                self._promoted_epoch = max(self._promoted_epoch, holder.epoch)
        if holder != self.holder:
            if self.holder is not None and self.holder.held and not (holder and holder.held):
                self._free_since = time.monotonic()  # a lock-delay may start now
                self._create_retry = 0.0  # a candidate needs a session: try right away
            self.holder = holder
            self._wake.set()

    async def _follow(self) -> None:
        """A replica learns who leads; publishes leaderChanged when the holder changes, and
        detaches as soon as the lock leaves the holder it followed."""
        h = self.holder
        if (self.ecfg.detach and self.announced is not None and not self.primary
                and self.watch_ok and (h is None or not h.held or (
                    h.identity() != self.announced and not h.promoted))):
            if not self._skip_detach():
                await self._detach()
        if h is None or not h.held or h.session in self.own_sessions:
            return
        if h.session in self._abandoned:
            return  # our previous incarnation's session, being destroyed: nobody to follow
        if self._held_by_former_self():
            self._former_primary = True  # adopt it (below) or, if it lapses, fence first
            return
        if not h.promoted:
            return  # the holder is still promoting: follow it once it says it is primary
        ident = h.identity()
        if ident == self.announced:
            return
        self.announced = ident
        self._last_leader = h.info.get("service_id") or None
        self._last_leader_epoch, self._handed_over_by = h.epoch, None
        self._detach_position = None  # it was for a round that this leader ended
        leader = self._leader_dict(h)
        self._publish_role("replica", leader)
        if self._former_primary:
            # our previous incarnation led and its job may still act as the primary
            self._former_primary = False
            log.warning("another member leads now: demoting what our previous incarnation "
                        "promoted", job=self.job)
            await self._hook("demote", self.ecfg.demote, "replica", leader)
        log.info("leader changed", job=self.job, leader=leader)
        self.ctx.bus.publish(ev.Event(ev.LEADER_CHANGED, self.job,
                                      detail=f"{leader.get('node')} epoch {h.epoch}"))
        await self._clear_post()

    async def _detach(self) -> None:
        """The lock left the primary we followed (freed, deleted, or taken by a holder
        that is still promoting): stop replicating from it before anybody promotes."""
        self.announced = None
        self._publish_role("replica", None)
        log.info("the lock left the leader we followed: detaching", job=self.job,
                 leader=self._last_leader)
        assert self.ecfg.detach
        result = await self._hook("detach", self.ecfg.detach, "replica", None)
        self._detach_position = None
        if not result.ok:
            log.error("detach hook failed", job=self.job, rc=result.rc,
                      timed_out=result.timed_out)
        elif self.ecfg.position:
            # `position=N` as its last line: the position the member's data reached when it
            # stopped replicating, so the round need not start the position hook as well
            self._detach_position = reported_position(result.output)
        self.ctx.bus.publish(ev.Event(ev.LEADER_CHANGED, self.job, detail="detached"))

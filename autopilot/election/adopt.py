"""Adopting our previous incarnation's session.

When the supervisor was killed and restarted while its job kept running, the key may
still be held by a session of this very service: take it over rather than wait for it to
lapse (unless the service is no longer the instance that was promoted).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from autopilot.election import lock
from autopilot.election.base import CALL_TIMEOUT, ElectionState, log


class Adoption(ElectionState):
    """Part of :class:`Election`: adopting the previous incarnation's session."""

    def _held_by_former_self(self) -> bool:
        """The key is held by a session of this very service that we did not create: our
        previous incarnation (the supervisor was killed and restarted, its job kept
        running)."""
        h = self.holder
        return bool(h and h.held and h.session not in self.own_sessions
                    and h.session not in self._abandoned
                    and h.info.get("service_id") == self.service_id
                    and h.info.get("node") == self.ctx.hostname)

    async def _adopt(self) -> None:
        """Take over our previous incarnation's still-valid session instead of waiting for
        it to lapse: nobody else can hold the lock while it lives, so the lock is ours and
        the epoch does not change. The promote hook runs again (hooks must be idempotent)."""
        h = self.holder
        assert h is not None and h.session
        old = h.session
        self._acquire_retry = time.monotonic() + 1.0  # at most one attempt a second
        if self.ecfg.identity:
            want = h.info.get("identity")
            got = await self._identity()
            if not want or got != want:
                # the service lost the state it had when it was promoted (restarted empty,
                # restored, replaced): never resume leadership for it; end the old session
                # (its lock-delay then applies) and compete like any other member
                log.warning("not adopting the previous session: the service is not the "
                            "instance that was promoted", job=self.job, session=old,
                            recorded=want, now=got)
                self._abandoned.add(old)
                self._former_primary = True
                self._abandon(old, None, "identity changed")
                return
        try:
            info = await self._call(lambda c: lock.session_info(c, old, timeout=CALL_TIMEOUT),
                                    timeout=CALL_TIMEOUT + 0.5)
            if not info or not lock.bound_to(info, self.check_id):
                return
            sent = time.monotonic()
            await self._call(lambda c: lock.renew_session(c, old, timeout=CALL_TIMEOUT),
                             timeout=CALL_TIMEOUT + 0.5)
        except Exception as exc:  # noqa: BLE001 - it lapses by itself; we then compete
            log.info("could not adopt the previous session", job=self.job, error=str(exc))
            return
        mine = self.session
        if self._keeper is not None:
            self._keeper.cancel()
        self.session = old
        self.own_sessions.add(old)
        self.session_lost = False
        self.lease.start(sent)
        self._keeper = asyncio.create_task(self._keep(old), name=f"election-renew-{self.job}")
        if mine:
            with contextlib.suppress(Exception):
                await self._call(lambda c: lock.destroy_session(c, mine, timeout=1.5),
                                 timeout=2.0)
        log.warning("adopted the session of our previous incarnation", job=self.job,
                    session=old, epoch=h.epoch)
        self.holding = True
        await self._promote(h)

"""What one job's election knows, and the helpers every part of it shares.

The election is one class, :class:`~autopilot.election.election.Election`, composed of
parts that each live in a module of their own and read and write this shared state:
watching the key and following its holder (watch.py), the session and its lease
(sessions.py), the candidacy round (rounds.py), becoming and ceasing to be the leader
(leading.py), adopting our previous incarnation's session (adopt.py), and the decision
loop that ties them (election.py). The parts call each other through ``self``; only
the decision loop decides. Here: the state, the catalog call, the hook runner and what
the rest of autopilot sees of the role (facts and child environment).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from autopilot import events as ev
from autopilot.aio import Backoff
from autopilot.config.model import ElectionConfig, JobConfig
from autopilot.context import Context
from autopilot.election import lock
from autopilot.election.candidacy import PeerMemory, Round
from autopilot.election.epochs import EpochStore, state_path
from autopilot.election.lease import Lease, default_margin
from autopilot.jobs.hooks import HookResult, run_hook
from autopilot.jobs.process import child_env
from autopilot.logs import get_logger

log = get_logger("autopilot.election")

WATCH_WAIT = 10.0  # blocking query wait on the election key, seconds
CALL_TIMEOUT = 3.0  # ordinary catalog calls (create, acquire, release, destroy)
ENV_KEYS = ("AUTOPILOT_LEADER_ADDRESS", "AUTOPILOT_LEADER_PORT", "AUTOPILOT_LEADER_NODE",
            "AUTOPILOT_LEADER_EPOCH")


def lease_length(session_ttl: float, job: JobConfig) -> float:
    """How long a successful renew lets us act as the leader (before the margin).

    The catalog invalidates the session when its TTL lapses, but also as soon as the
    service check it is bound to turns critical: a check TTL shorter than the session TTL
    would let the lock go first. Passes reach the catalog every health interval while the
    check passes (the registration heartbeats an elected job after every passing check,
    not every ttl/2: discovery/registration.py), so the check cannot lapse earlier than
    ``ttl - interval`` after a moment we reached the catalog (a check that stops passing
    while we can still reach the catalog invalidates the session under our eyes: the key
    watch sees it at once)."""
    length = session_ttl
    health = job.health
    if health is not None and health.ttl > 0:
        check_bound = health.ttl - health.interval if health.ttl > health.interval \
            else health.ttl / 2
        length = min(length, check_bound)
    return length


def last_line(output: str) -> str:
    """A query hook's answer (identity, position): the last non-empty line it printed
    (stdout and stderr arrive together: a warning printed before it does not count)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class ElectionState:
    """The state the parts share (see the module docstring), and their common helpers."""

    def __init__(self, ctx: Context, job: JobConfig) -> None:
        assert job.election is not None
        self.ctx = ctx
        self.cfg = job
        self.ecfg: ElectionConfig = job.election
        self.job = job.name
        self.key = f"election.{job.name}"
        self.lock_key = self.ecfg.key or f"service/{job.name}/leader"
        self.service_id = ctx.service_id(job.name)
        self.check_id = f"service:{self.service_id}"
        self.ttl = float(max(10, round(self.ecfg.session_ttl)))  # what the catalog enforces
        self.lease = Lease(lease_length(self.ttl, job))
        self.renew_interval = min(self.ecfg.renew_interval or self.ttl / 3, self.lease.ttl / 3)
        #: while the catalog answers "No cluster leader", the lease may last this long after
        #: the last renew sent: never past what the session TTL itself guarantees
        safe = self.ttl - default_margin(self.ttl)
        tol = self.ecfg.no_leader_tolerance
        self.no_leader_tolerance = safe if tol is None else min(max(tol, 0.0), safe)
        self.epochs = EpochStore(state_path(self.ecfg.state_dir, self.lock_key,
                                            self.service_id))
        #: candidacy (the most up-to-date member runs first) needs a position or detach hook
        self.candidacy = bool(self.ecfg.position or self.ecfg.detach)
        self.posts_prefix = f"{self.lock_key}/candidates/"
        self.post_key = f"{self.posts_prefix}{self.service_id}"
        # observed state
        #: None until the job reports: then the catalog decides (a session bound to a
        #: critical or missing check cannot be created)
        self.healthy: bool | None = None
        self.maintenance = False
        self.session: str | None = None
        self.own_sessions: set[str] = set()  # every session this member created or adopted
        self.session_lost = False
        self.holder: lock.Holder | None = None
        self.holder_index = 0
        self.watch_ok = False  # at least one read of the key succeeded
        # decided state
        self.holding = False  # we acquired the lock and have not released it
        self.primary = False  # ELECTED published and not yet DEMOTED
        self.announced: tuple[str, int] | None = None  # leader identity we last published
        self.stopping = False
        self.handed_over = False
        self.closed = False  # loops end (a cancel can be swallowed: see autopilot/aio.py)
        self._wake = asyncio.Event()
        self._former_primary = False
        self._free_since = 0.0  # when the key was last seen losing its holder
        self._not_before = 0.0  # no candidacy before (after a failed promote)
        self._failures = 0
        self._born = time.monotonic()  # a round soon after it may be a restart round
        self._create_retry = 0.0
        self._acquire_retry = 0.0
        self._decided_at = 0.0  # when the last step compared the deadlines (monotonic)
        self._acquire_backoff = Backoff(0.05, 1.0, jitter=False)
        self._round: Round | None = None  # the candidacy round while the lock is free
        self._posted = False  # our post exists under posts_prefix
        self._last_leader: str | None = None  # service ID of the leader we last followed
        #: the highest epoch of a holder seen promoted: candidacy posts older than it belong
        #: to an earlier failover; the peers' last posts since then (rounds.py)
        self._promoted_epoch = 0
        self._peers = PeerMemory()
        self._abandoned: set[str] = set()  # previous-incarnation sessions we refused
        self._pending: dict[str, str | None] = {}  # session -> key to release, then destroy
        self._cleaner: asyncio.Task | None = None
        self._no_leader_since = 0.0
        self._poll_at = 0.0  # the candidacy looks again at the posts then
        #: the position the detach hook reported (``position=N``): the next candidacy post
        #: uses it instead of running the position hook (one process start less)
        self._detach_position: int | None = None
        self._posts_watch: asyncio.Task | None = None  # wakes a waiting round (rounds.py)
        self._tasks: list[asyncio.Task] = []
        self._main_task: asyncio.Task | None = None
        self._keeper: asyncio.Task | None = None
        self._sub: ev.Subscription | None = None
        self._transition = asyncio.Lock()

    # ---- what the rest of autopilot sees ------------------------------------------------

    def _leader_dict(self, holder: lock.Holder) -> dict[str, Any]:
        info = holder.info
        return {"node": info.get("node", ""), "address": info.get("address", ""),
                "port": info.get("port", 0), "service_id": info.get("service_id", ""),
                "epoch": holder.epoch}

    def _role_env(self, role: str, leader: dict[str, Any] | None) -> dict[str, str]:
        env = {"AUTOPILOT_ROLE": role}
        if leader:
            env.update({"AUTOPILOT_LEADER_ADDRESS": str(leader.get("address", "")),
                        "AUTOPILOT_LEADER_PORT": str(leader.get("port", "")),
                        "AUTOPILOT_LEADER_NODE": str(leader.get("node", "")),
                        "AUTOPILOT_LEADER_EPOCH": str(leader.get("epoch", ""))})
        return env

    def _publish_role(self, role: str, leader: dict[str, Any] | None) -> None:
        """Facts and child env first: subscribers of the next event read them."""
        facts = self.ctx.facts.setdefault(self.job, {})
        facts.update({"role": role, "leader": leader,
                      "epoch": leader.get("epoch") if leader else None})
        for k in ENV_KEYS:
            self.ctx.child_env.pop(k, None)
        self.ctx.child_env.update(self._role_env(role, leader))

    async def _hook(self, name: str, argv: list[str] | None, role: str,
                    leader: dict[str, Any] | None,
                    extra: dict[str, str] | None = None) -> HookResult:
        if not argv:
            return HookResult(0)
        base = {k: v for k, v in {**os.environ, **self.ctx.child_env}.items()
                if k not in ENV_KEYS and k != "AUTOPILOT_STEP_DOWN_REASON"}
        env = child_env(base, self.cfg.env, {**self._role_env(role, leader), **(extra or {})})
        log.info("running hook", job=self.job, hook=name)
        return await run_hook(list(argv), env, self.ecfg.hook_timeout,
                              name=f"{name}.{self.job}")

    async def _call(self, fn, timeout: float):
        """``fn(consul)`` (a `lock` coroutine) on the event loop, at most ``timeout``."""
        return await lock.call(self.ctx.consul, fn, timeout=timeout)

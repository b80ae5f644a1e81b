"""One job's service in Consul: register, heartbeat, explicit fail, deregister, re-register.

Consul can never hold up the bus:

- the *listener* (a synchronous bus listener for the job's and the global events, called
  inline by ``publish``: no task woken per health check) only records the desired state
  (present or not, status, output, "a heartbeat is owed") and wakes the converger; it
  never awaits Consul;
- the *converger*, a task, makes Consul match the latest desired state. It coalesces events that
  arrive while a call is in flight, backs off with jitter while Consul fails, and
  re-registers at once when Consul says the service or its check is gone (an agent restart,
  a catalog restart, maintenance) — ContainerPilot 3.8 never did (its `wasRegistered` bug).

It also verifies, when no heartbeat has proven it recently, that the agent still knows the
service, and right after Consul becomes reachable again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from autopilot import events as ev
from autopilot.aio import backoff_delay, cancel_all, next_tick
from autopilot.config.model import JobConfig
from autopilot.context import Context
from autopilot.discovery import http
from autopilot.discovery.client import is_unreachable
from autopilot.discovery.http import ConsulRefused
from autopilot.discovery.interfaces import InterfaceError, env_names, resolve_ip
from autopilot.durations import to_go
from autopilot.logs import get_logger

log = get_logger("autopilot.discovery")

CALL_TIMEOUT = 5.0  # seconds for one register/update/deregister call
STOP_TIMEOUT = 3.0  # how long stop() tries to deregister
RETRY_MIN = 0.25  # the first retry delay after a failed call; doubles per failure
RETRY_MAX = 5.0
DEFAULT_TTL = 30.0  # a port without a health block (ContainerPilot's validation forbids it)


class _Lost(Exception):
    """Consul no longer has our service or its check: register again at once."""


class ServiceRegistration:
    """A component: keeps one job's service registered in Consul while the job is healthy."""

    fatal = False  # a failure to start is logged; autopilot runs on

    def __init__(self, ctx: Context, cfg: JobConfig, *, heartbeat: float | None = None,
                 extra_tags: list[str] | None = None) -> None:
        """``heartbeat`` (seconds) makes the service register at once and report passing on
        that period by itself: the hidden ``containerpilot`` telemetry service."""
        self.ctx = ctx
        self.cfg = cfg
        self.name = cfg.name
        self.key = f"service.{cfg.name}"
        self.service_id = ctx.service_id(cfg.name)
        self.check_id = f"service:{self.service_id}"
        self.heartbeat = heartbeat
        self.extra_tags = list(extra_tags or [])
        ttl = cfg.health.ttl if cfg.health and cfg.health.ttl > 0 else DEFAULT_TTL
        self.ttl = float(ttl)
        self.verify_period = min(5.0, max(1.0, self.ttl / 2))
        if heartbeat:  # its own beats prove it: a verification would race the next beat
            self.verify_period = max(self.verify_period, min(heartbeat * 1.5, self.ttl / 2))
        self._ttl_go = to_go(self.ttl)
        self._address_at = 0.0  # when the advertised address was last looked up
        # desired state, written by the listener
        self._present = False
        self._status: str = cfg.initial_status or "passing"
        self._output = ""
        self._owed = False  # a status update (heartbeat) has to go out
        self._maintenance = False
        # what Consul has, as far as we know
        self.registered = False
        self._maybe_registered = False
        self._sent: dict[str, Any] | None = None  # the last definition's shape (_shape)
        self._sent_status: tuple[str, str] | None = None
        self.address: str | None = None
        self._last_ok = 0.0
        self._last_beat = 0.0  # the last status Consul accepted (register or update)
        self._verify_due = False
        self._ip_error: str | None = None
        self._last_error: str | None = None
        # the heartbeat's fast path (see _beat_now)
        self._update_path = f"/v1/agent/check/update/{self.check_id}"
        self._beat_body: tuple[str, str, bytes] | None = None  # (status, output, encoded)
        #: the converger waits for _wake with nothing to do (``_park``), until the timer
        #: (at ``verify_period`` when registered) ends the wait
        self._parked = False
        self._park_timer: asyncio.TimerHandle | None = None
        self._park_expired = False
        self._inflight: asyncio.Future[None] | None = None  # a heartbeat sent by _beat_now
        # machinery
        self._wake = asyncio.Event()
        self._reconnected = asyncio.Event()  # ends a retry's wait (_back_off)
        self._tasks: list[asyncio.Task] = []
        self._listening = False
        self._remove_listener: Any = None
        self._stopped = False
        self._beat_timer: asyncio.TimerHandle | None = None
        self._beat_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None  # kept: asking costs a getpid

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._set_env()
        self._facts()
        self._loop = asyncio.get_running_loop()
        self.ctx.bus.add_listener(self.on_event, sources=frozenset({self.name, ev.GLOBAL}))
        self._listening = True
        if self.ctx.consul is None:
            return  # discovery off: only the environment and facts
        if self.cfg.initial_status or self.heartbeat:
            self._present = True
            self._owed = False
        self._remove_listener = self.ctx.consul.on_reconnect(self._on_reconnect)
        self._tasks.append(asyncio.create_task(self._converge_loop(), name=f"{self.key}.sync"))
        if self.heartbeat:
            loop = self._loop
            self._beat_at = next_tick(loop.time(), self.heartbeat)
            self._beat_timer = loop.call_at(self._beat_at, self._beat)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._beat_timer is not None:
            self._beat_timer.cancel()
            self._beat_timer = None
        await cancel_all(self._tasks)
        if self._inflight is not None:  # a heartbeat in flight lands before the deregister
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._inflight), STOP_TIMEOUT)
        if self._listening:
            self.ctx.bus.remove_listener(self.on_event)
            self._listening = False
        if self._remove_listener:
            self._remove_listener()
        if self.ctx.consul is not None and (self.registered or self._maybe_registered):
            try:
                await self._deregister(timeout=STOP_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - Consul down at shutdown: TTL will expire
                log.warning("could not deregister service", service=self.service_id,
                            error=str(exc) or type(exc).__name__)

    # ---- the listener: records desired state, never awaits Consul ---------------------------
    def on_event(self, event: ev.Event) -> None:
        code, source = event.code, event.source
        if source == self.name:
            if code == ev.HEALTHY and not self._maintenance:
                was_present, self._present = self._present, True
                if not self._want_status("passing", event.detail) and was_present:
                    return  # nothing owed yet: a later heartbeat carries the output
            elif code == ev.UNHEALTHY and not self._maintenance:
                if not self._want_status("critical", event.detail):
                    return
            elif code in (ev.STOPPING, ev.STOPPED):
                self._present = False
            elif code in (ev.ELECTED, ev.DEMOTED, ev.LEADER_CHANGED):
                pass  # the role is read from ctx.facts when the definition is built
            else:
                return
        elif source == ev.GLOBAL and code == ev.ENTER_MAINTENANCE:
            self._maintenance = True
            self._present = False
        elif source == ev.GLOBAL and code == ev.EXIT_MAINTENANCE:
            self._maintenance = False
            if self.heartbeat:
                self._present = True
        else:
            return
        self._poke()

    def _poke(self) -> None:
        """Send an owed heartbeat at once (``_beat_now``) or wake the converger; whatever
        goes wrong in the first falls back to the second (the bus swallows a listener's
        error: a heartbeat must not be lost with it)."""
        try:
            if self._beat_now():
                return
        except Exception:  # noqa: BLE001 - the converger sends it and reports
            log.debug("heartbeat fast path failed", service=self.service_id, exc_info=True)
        self._wake.set()

    def _beat_now(self) -> bool:
        """Send an owed TTL heartbeat from here, without waking the converger, when it is
        nothing but a heartbeat: the converger is parked with nothing else to do, the
        service registered and verified, its definition unchanged (the address looked up
        within ``verify_period``), the status the one Consul has, no heartbeat in flight,
        and a kept connection idle. The answer comes back in a callback
        (``_beaten``); anything but 200 hands the heartbeat back to the converger, which
        sends it again and handles the error as before. A job with an ``election`` always
        goes through the converger. Two task wake-ups (and the definition's rebuild) per
        heartbeat were most of its cost."""
        consul = self.ctx.consul
        loop = self._loop
        if (not self._parked or self._park_expired or loop is None
                or self._inflight is not None
                or not self._owed or not self.registered or not self._present
                or self._verify_due or self._maintenance or self.cfg.election is not None
                or consul is None or self._sent_status is None
                or self._sent_status[0] != self._status):
            return False
        now = time.monotonic()
        if now - self._address_at >= self.verify_period:  # the lookup the converger does
            try:
                if resolve_ip(self.cfg.interfaces) != self.address:
                    return False  # moved: the converger registers the new address
            except InterfaceError:
                return False  # the converger reports it
            self._address_at = now
        status, output = self._status, self._output
        body = self._beat_body
        if body is None or body[0] != status or body[1] != output:  # encoded once
            body = self._beat_body = (status, output, http.encode_body(
                {"Status": status, "Output": output}))
        inflight = loop.create_future()

        def done(resp: http.Response | None, exc: BaseException | None) -> None:
            self._beaten(inflight, status, output, resp, exc)

        if not consul.send_nowait("PUT", self._update_path, body[2], CALL_TIMEOUT, done,
                                  loop=loop):
            return False  # no idle connection: the converger opens one
        self._owed = False
        self._inflight = inflight
        return True

    def _beaten(self, inflight: asyncio.Future[None], status: str, output: str,
                resp: http.Response | None, exc: BaseException | None) -> None:
        """The answer to ``_beat_now``'s heartbeat."""
        self._inflight = None
        if not inflight.done():
            inflight.set_result(None)
        if exc is None and resp is not None and resp.code == 200:
            self._sent_status = (status, output)
            self._last_ok = self._last_beat = time.monotonic()
            timer = self._park_timer
            if timer is not None and not self._park_expired:  # proven now: no verification
                timer.cancel()
                loop = self._loop
                assert loop is not None
                self._park_timer = loop.call_at(loop.time() + self.verify_period,
                                                self._park_ends)
            return
        self._owed = True  # the converger sends it again and reports what went wrong
        self._wake.set()

    @property
    def wanted(self) -> tuple[str, str]:
        """The check status and output Consul should show now (what the bus asked for)."""
        return self._status, self._output

    @property
    def running(self) -> bool:
        """The listener is subscribed and the converger still runs (a failure must not end
        them)."""
        return self._listening and not any(t.done() for t in self._tasks)

    def _want_status(self, status: str, output: str) -> bool:
        """Record a check result; True when Consul must hear of it now: a change of status
        at once, otherwise a TTL heartbeat only when waiting for the next result would
        leave more than half the TTL without one (not after every check) -- except for a
        job with an ``election``: its heartbeats go out after every passing check, because
        the leader's local lease and the failover's detection are both counted from them
        (the check may lapse ``ttl`` minus the gap between two heartbeats after a renew, so
        the lease is ``ttl - interval``; see election.lease_length and docs/stateful.md)."""
        changed = status != self._status
        if changed and self.registered:
            log.info("service check status", service=self.service_id, status=status)
        self._status = status
        self._output = output
        period = self.heartbeat or (self.cfg.health.interval if self.cfg.health else 0) or 0
        first_output = output != "" and self._sent_status is not None \
            and self._sent_status[1] == ""  # Consul shows the registration's empty output
        if changed or first_output or self.cfg.election is not None \
                or time.monotonic() - self._last_beat + period > self.ttl / 2:
            self._owed = True
        return self._owed

    def _beat(self) -> None:
        """The service's own heartbeat (``heartbeat=``): a loop timer on the tick grid of
        health checks (``aio.next_tick``: the same wake-up as the checks of a whole-second
        interval), not a task sleeping in ``asyncio.sleep`` (a future, a timer and a task
        step per beat, and a period that drifted by each step's time)."""
        assert self.heartbeat and self._loop is not None
        loop = self._loop
        now = loop.time()
        nxt = next_tick(self._beat_at, self.heartbeat)
        if nxt < now:  # fell behind (suspended): no burst of beats
            nxt = next_tick(now, self.heartbeat)
        self._beat_at = nxt
        self._beat_timer = loop.call_at(nxt, self._beat)
        if not self._maintenance:
            self._present = True
            self._want_status("passing", "ok")
            self._poke()

    def _on_reconnect(self) -> None:
        self._verify_due = True
        self._reconnected.set()
        self._wake.set()

    async def _back_off(self, failures: int) -> None:
        """Wait before the next try after ``failures`` failures in a row: doubling from
        RETRY_MIN, at most RETRY_MAX and at most half the check's TTL, and no longer once
        Consul answers again (another component's call proved it). A catalog that restarts
        gives every TTL check a full TTL from then: a heartbeat still waiting out a delay
        grown during the outage (up to 5 s) let a 0.8-3 s check lapse, which invalidated
        the sessions bound to it and deposed a healthy elected primary (chaos S9)."""
        delay = backoff_delay(failures, RETRY_MIN, max(RETRY_MIN, min(RETRY_MAX, self.ttl / 2)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._reconnected.wait()

    # ---- the converger ------------------------------------------------------------------------
    async def _converge_loop(self) -> None:
        failures = 0
        lost_streak = 0
        while True:
            self._wake.clear()
            self._reconnected.clear()
            try:
                await self._converge()
            except _Lost:
                lost_streak += 1
                if lost_streak <= 3:
                    continue  # register again at once
                failures += 1
                await asyncio.sleep(backoff_delay(failures, RETRY_MIN, RETRY_MAX))
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is retried with backoff
                failures += 1
                self._note_failure(exc)
                await self._back_off(failures)
                continue
            if self._last_error:  # a refusal was logged: say that it is over
                log.info("consul accepts service updates again", service=self.service_id)
                self._last_error = None
            failures = lost_streak = 0
            if self._wake.is_set():
                continue
            timed_out = await self._park(self.verify_period if self.registered else None)
            if self._inflight is not None:  # a heartbeat of _beat_now: its answer first
                await asyncio.shield(self._inflight)  # (it may prove the service is there)
            if timed_out and time.monotonic() - self._last_ok >= self.verify_period:
                self._verify_due = True

    async def _park(self, timeout: float | None) -> bool:
        """Wait for ``_wake``, at most ``timeout`` (None: no limit); True if the time ran
        out. A plain loop timer that sets ``_wake``: a heartbeat's answer moves it
        (``_beaten``) without a ``getpid`` (``asyncio.Timeout.reschedule`` asks for the
        running loop: a system call on Python 3.11) and, at expiry, without cancelling
        the task as ``asyncio.timeout`` does."""
        loop = self._loop
        assert loop is not None
        self._park_expired = False
        if timeout is not None:
            self._park_timer = loop.call_at(loop.time() + timeout, self._park_ends)
        self._parked = True
        try:
            await self._wake.wait()
        finally:
            self._parked = False
            timer, self._park_timer = self._park_timer, None
            if timer is not None:
                timer.cancel()
        return self._park_expired

    def _park_ends(self) -> None:
        self._park_timer = None
        self._park_expired = True
        self._wake.set()

    def _note_failure(self, exc: BaseException) -> None:
        message = str(exc) or type(exc).__name__
        if is_unreachable(exc):
            return  # the client logs "consul unreachable" once for everyone
        if message != self._last_error:
            log.warning("consul refused a service update", service=self.service_id,
                        error=message)
            self._last_error = message

    async def _converge(self) -> None:
        if not self._present:
            if self.registered or self._maybe_registered:
                await self._deregister()
            self._owed = False
            return
        if self.registered and self._verify_due:
            self._verify_due = False
            if not await self._exists():
                log.warning("consul lost the service; registering it again",
                            service=self.service_id)
                self._mark_lost()
        definition = self._definition()
        if definition is None:
            return  # no address: error already reported, retry on the next event
        if not self.registered or self._shape(definition) != self._sent:
            await self._register(definition)
        if self._owed or self._sent_status is None or self._sent_status[0] != self._status:
            owed_status = (self._status, self._output)
            self._owed = False
            try:
                await self._update(*owed_status)
            except BaseException:
                self._owed = True
                raise

    # ---- building the service definition -------------------------------------------------------
    def _resolve_address(self, report: bool = True) -> str | None:
        """The address to advertise; on failure log and publish ``error`` once per streak
        (``report=False`` at start: jobs are not subscribed yet, the registration reports)."""
        try:
            address = resolve_ip(self.cfg.interfaces)
        except InterfaceError as exc:
            message = f"job {self.name}: {exc}"
            if report and message != self._ip_error:
                self._ip_error = message
                log.error("cannot advertise service: no matching interface", job=self.name,
                          interfaces=self.cfg.interfaces, error=str(exc))
                self.ctx.bus.publish(ev.Event(ev.ERROR, self.name, detail=message))
            return None
        self._ip_error = None
        return address

    def _set_env(self, address: str | None = None) -> None:
        address = address or self._resolve_address(report=False)
        if address is None:
            return
        self.address = address
        for name in env_names(self.name):
            self.ctx.child_env[name] = address

    def tags(self) -> list[str]:
        tags = list(self.cfg.tags) + [t for t in self.extra_tags if t not in self.cfg.tags]
        election = self.cfg.election
        if election is not None:
            role = self.ctx.facts.get(self.name, {}).get("role")
            drop = {election.primary_tag, election.replica_tag}
            tags = [t for t in tags if t not in drop]
            if role == "primary":
                tags.append(election.primary_tag)
            elif role == "replica":
                tags.append(election.replica_tag)
        return tags

    def _current_address(self) -> str | None:
        """The address to advertise: looked up again for a registration, and while
        registered at most every ``verify_period`` rather than for every heartbeat (an
        interface by name is an rtnetlink dump: 0.5 ms of CPU, more than the heartbeat)."""
        now = time.monotonic()
        if self.registered and self.address is not None \
                and now - self._address_at < self.verify_period:
            return self.address
        address = self._resolve_address()
        if address is not None:
            self._address_at = now
        return address

    def _definition(self) -> dict[str, Any] | None:
        address = self._current_address()
        if address is None:
            return None
        if address != self.address:
            self._set_env(address)
        check: dict[str, Any] = {
            "CheckID": self.check_id,
            "TTL": self._ttl_go,
            "Status": self._status,
            "Notes": f"TTL for {self.name} set by autopilot",
        }
        body: dict[str, Any] = {
            "ID": self.service_id,
            "Name": self.name,
            "Address": address,
            "Port": self.cfg.port,
            "Tags": self.tags(),
            "Check": check,
        }
        if self.cfg.meta:
            body["Meta"] = dict(self.cfg.meta)
        if self.cfg.consul is not None:
            body["EnableTagOverride"] = bool(self.cfg.consul.enable_tag_override)
            if self.cfg.consul.deregister_critical_service_after:
                check["DeregisterCriticalServiceAfter"] = (
                    self.cfg.consul.deregister_critical_service_after)
        return body

    @staticmethod
    def _shape(definition: dict[str, Any] | None) -> dict[str, Any] | None:
        """The definition without the check's status: a status change alone is a check
        update, not a re-registration."""
        if definition is None:
            return None
        check = {k: v for k, v in definition["Check"].items() if k != "Status"}
        return definition | {"Check": check}

    # ---- Consul calls -------------------------------------------------------------------------
    async def _call(self, method: str, path: str, body: Any = None, *,
                    timeout: float | None = None) -> Any:
        assert self.ctx.consul is not None
        return await http.request(self.ctx.consul, method, path, body=body,
                                  timeout=timeout or CALL_TIMEOUT)

    async def _register(self, definition: dict[str, Any]) -> None:
        self._maybe_registered = True
        resp = await self._call("PUT", "/v1/agent/service/register", definition)
        if resp.code != 200:
            raise ConsulRefused("register", resp.code, resp.body)
        first = not self.registered
        self.registered = True
        self._sent = self._shape(definition)  # shaped once, not at every heartbeat
        self._sent_status = (definition["Check"]["Status"], "")
        self._last_ok = self._last_beat = time.monotonic()
        # the registration carried the status (it was the heartbeat); a check output
        # follows at once, later outputs ride on the heartbeats
        self._owed = bool(self._output)
        self._facts()
        log.info("service registered" if first else "service re-registered",
                 service=self.service_id, address=definition["Address"],
                 port=definition["Port"], tags=definition["Tags"],
                 status=definition["Check"]["Status"])

    async def _update(self, status: str, output: str) -> None:
        resp = await self._call("PUT", self._update_path,
                                {"Status": status, "Output": output})
        if resp.code == 200:
            self._sent_status = (status, output)
            self._last_ok = self._last_beat = time.monotonic()
            return
        if http.is_lost(resp.code, resp.body):
            log.warning("consul lost the service check; registering it again",
                        service=self.service_id, code=resp.code)
            self._mark_lost()
            raise _Lost()
        raise ConsulRefused("check update", resp.code, resp.body)

    async def _exists(self) -> bool:
        resp = await self._call("GET", f"/v1/agent/service/{self.service_id}")
        if resp.code == 200:
            self._last_ok = time.monotonic()
            return True
        if resp.code == 404:
            return False
        raise ConsulRefused("service lookup", resp.code, resp.body)

    async def _deregister(self, timeout: float | None = None) -> None:
        resp = await self._call("PUT", f"/v1/agent/service/deregister/{self.service_id}",
                                timeout=timeout)
        if resp.code not in (200, 404):
            raise ConsulRefused("deregister", resp.code, resp.body)
        was = self.registered
        self.registered = self._maybe_registered = False
        self._sent = self._sent_status = None
        self._facts()
        if was:
            log.info("service deregistered", service=self.service_id)

    def _mark_lost(self) -> None:
        if self.ctx.consul is not None:
            self.ctx.consul.catalog_lost()  # blocking queries start over (a wiped catalog)
        self.registered = False
        self._sent = self._sent_status = None
        self._owed = True
        self._facts()

    def _facts(self) -> None:
        self.ctx.facts.setdefault(self.name, {}).update(
            registered=self.registered, service_id=self.service_id,
            address=self.address, port=self.cfg.port)

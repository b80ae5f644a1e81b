"""Reload by diffing: read the config again, keep every job and component whose config is
unchanged, stop the ones that changed or went away, start the new ones. A config that does
not load leaves the running one in place (``ConfigError`` to the caller: ``autopilot ctl
reload`` or SIGHUP's log line).

A mixin of `autopilot.supervisor.Supervisor`, kept apart because it is one procedure with
its own rules (a changed Consul address restarts everything that talks to Consul; control
and telemetry survive it).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from autopilot import logs
from autopilot.config.model import Config, ConfigError
from autopilot.logs import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from autopilot.component import Component
    from autopilot.context import Context
    from autopilot.discovery.client import ConsulClient
    from autopilot.jobs.job import Job

log = get_logger("autopilot.supervisor")


class Reloading:
    # what it uses of the supervisor
    ctx: Context
    jobs: dict[str, Job]
    components: list[Component]
    config_path: str | None
    shutting_down: bool
    reloads: int
    reload_all: bool
    _reload_lock: asyncio.Lock | None
    _loader: Callable[[str], Config]

    async def reload(self) -> None:
        """Re-read the config; restart only what changed (every job with ``reload_all``).
        ConfigError: nothing changes."""
        assert self._reload_lock is not None
        async with self._reload_lock:
            if self.shutting_down:
                raise ConfigError("shutting down; reload ignored", self.config_path)
            try:
                new = await asyncio.to_thread(self._loader, self.config_path)
            except ConfigError as exc:
                log.error("reload failed; keeping the running config", error=str(exc))
                raise
            except OSError as exc:
                log.error("reload failed; keeping the running config", error=str(exc))
                raise ConfigError(str(exc), self.config_path) from exc
            await self._apply(new)

    async def _apply(self, new: Config) -> None:
        old = self.ctx.config
        if new.logging != old.logging:
            logs.configure(new.logging)
        new_cfgs = {j.name: j for j in new.jobs}
        # reload_all: ContainerPilot's reload (the containerpilot entry point's default)
        gone = [j for n, j in self.jobs.items()
                if self.reload_all or n not in new_cfgs or new_cfgs[n] != j.cfg]
        kept = {n: j for n, j in self.jobs.items() if j not in gone}
        # the other components: build for the new config, keep the equal ones
        old_consul = self.ctx.consul
        consul_changed = self._consul_changed(new, old_consul)
        self.ctx.config = new
        if consul_changed:
            self.ctx.consul = self._connect(new)
        try:
            fresh = self._build_components()
        except Exception:
            self.ctx.config, self.ctx.consul = old, old_consul
            raise
        old_by_key = {c.key: c for c in self.components}
        result: list[Component] = []
        to_start: list[Component] = []
        for comp in fresh:
            prev = old_by_key.get(comp.key)
            same = prev is not None and prev.cfg == comp.cfg
            if same and not (consul_changed and comp.key not in ("control", "telemetry")):
                result.append(prev)
            else:
                result.append(comp)
                to_start.append(comp)
        keep_ids = {id(c) for c in result}
        to_stop = [c for c in self.components if id(c) not in keep_ids]
        log.info("reloading", jobs_restarted=sorted(j.name for j in gone if j.name in new_cfgs),
                 jobs_removed=sorted(j.name for j in gone if j.name not in new_cfgs),
                 jobs_added=sorted(n for n in new_cfgs if n not in self.jobs),
                 components_restarted=sorted(c.key for c in to_start))
        await asyncio.gather(*(j.stop() for j in gone))
        for comp in reversed(to_stop):
            await self._stop_component(comp)
        if consul_changed and old_consul is not None:
            old_consul.close()
        self._adopt(result)
        for comp in to_start:
            await self._start_component(comp)
        jobs: dict[str, Job] = {}
        started: list[Job] = []
        for cfg in new.jobs:
            job = kept.get(cfg.name)
            if job is None:
                job = self._new_job(cfg)
                started.append(job)
            jobs[cfg.name] = job
        self.jobs = jobs
        for job in started:
            await job.start(late=True)
        self.reloads += 1
        self._schedule_check()

    @staticmethod
    def _consul_changed(new: Config, current: ConsulClient | None) -> bool:
        """Compare what we would connect to (config plus CONSUL_* env, which putenv may have
        changed), not just the config block."""
        if new.consul is None or current is None:
            return (new.consul is None) != (current is None)
        from autopilot.discovery.connection import resolve

        return resolve(new.consul) != current.cfg

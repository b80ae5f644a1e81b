"""Raw JSON (a dict) -> the typed ``Config``, with every problem collected, not just the first.

Rules follow ContainerPilot v3's decoder and validators (see docs/configuration.md),
plus autopilot's extensions. Keys match case-insensitively, like mapstructure. Each error
names the field path (``jobs[2].health.interval``) and, when known, the line it is on.

One module per config section; `Validator` assembles them. A new key goes into the
module of its section.

The sections a config may well not have (``consul``, a job's ``election`` and ``function``,
``watches``, ``telemetry``, ``templates``) are imported by the first call into one of them:
`Validator.__getattr__` then turns the validator into one with every section
(`_complete`), so a one-job supervisor does not keep their code (about 60 KB;
docs/performance.md). Every call into them is behind a test that its key is present.
"""

from __future__ import annotations

from typing import Any

from autopilot.config import coerce
from autopilot.config.coerce import show
from autopilot.config.json5parse import Path
from autopilot.config.model import Config
from autopilot.config.validate.base import format_path
from autopilot.config.validate.control import ControlSection
from autopilot.config.validate.health import HealthSection
from autopilot.config.validate.jobs import JobSection, interface_spec_problem
from autopilot.config.validate.logging import LoggingSection
from autopilot.config.validate.when import WhenSection

__all__ = ["Validator", "format_path", "interface_spec_problem"]

TOP_KEYS = ["consul", "logging", "stopTimeout", "jobs", "watches", "telemetry", "control",
            "templates", "mainJob"]
_complete_class: type[Validator] | None = None


class Validator(LoggingSection, JobSection, HealthSection, WhenSection, ControlSection):
    """Walks the raw config once, building the model and collecting errors/warnings."""

    def __getattr__(self, name: str) -> Any:
        """A method of a section not imported yet: import them all, then find it."""
        complete = _complete()
        if name.startswith("__") or type(self) is complete:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self.__class__ = complete
        return getattr(self, name)

    def config(self, raw: Any, path: str) -> Config:
        cfg = Config(path=path)
        f = self.fields((), raw, TOP_KEYS)
        if f is None:
            return cfg
        cfg.consul = self.consul(f) if "consul" in f else None
        if "logging" in f:
            cfg.logging = self.logging(*f["logging"])
        stop = self.take(f, "stopTimeout", coerce.to_duration, 0.0)
        if stop < 0:
            self.error(f["stopTimeout"][1], "must be >= 0")
        cfg.stop_timeout = stop if stop > 0 else 5.0
        if "jobs" in f:
            cfg.jobs = self.each(f["jobs"], self.job)
        if "watches" in f:
            cfg.watches = self.each(f["watches"], self.watch)
        if "telemetry" in f:
            cfg.telemetry = self.telemetry(*f["telemetry"], cfg)
        if "control" in f:
            cfg.control = self.control(*f["control"])
        if "templates" in f:
            cfg.templates = self.each(f["templates"], self.template)
        cfg.main_job = self.take(f, "mainJob", coerce.to_nonempty_str)
        self.cross_checks(cfg, f)
        return cfg

    def cross_checks(self, cfg: Config, f: dict[str, tuple[Any, Path]]) -> None:
        seen: dict[str, str] = {}
        for i, job in enumerate(cfg.jobs):
            where = self.origin.get(id(job), ("jobs", i))
            if job.name and job.name in seen:
                self.error((*where, "name"), f"duplicate job name {show(job.name)} "
                                             f"(also {seen[job.name]})")
            seen.setdefault(job.name, format_path(where))
            if job.election is not None and cfg.consul is None:
                self.error((*where, "election"), "needs Consul, but 'consul' is not set")
            if job.port and cfg.consul is None:
                self.warn((*where, "port"), "discovery is off (no 'consul'): the service "
                                            "is not registered")
        wseen: set[str] = set()
        for i, watch in enumerate(cfg.watches):
            where = self.origin.get(id(watch), ("watches", i))
            if watch.name and watch.name in wseen:
                self.error((*where, "name"), f"duplicate watch name {show(watch.name)}")
            wseen.add(watch.name)
        if cfg.watches and cfg.consul is None:
            self.warn(("watches",), "discovery is off (no 'consul'): watches never fire")
        if cfg.main_job is not None and cfg.job(cfg.main_job) is None:
            self.error(f["mainJob"][1], f"no job named {show(cfg.main_job)}")
        if cfg.telemetry is not None and cfg.telemetry.ready.job is not None:
            ready = cfg.telemetry.ready
            job = cfg.job(ready.job)
            rpath = ("telemetry", "ready", "job")
            if job is None:
                self.error(rpath, f"no job named {show(ready.job)}")
            elif ready.mode == "role" and job.election is None:
                self.error(rpath, f"job {show(ready.job)} has no 'election', so it has no role")


def _complete() -> type[Validator]:
    """`Validator` with every section (made once)."""
    global _complete_class
    if _complete_class is None:
        from autopilot.config.validate.consul import ConsulSection
        from autopilot.config.validate.election import ElectionSection
        from autopilot.config.validate.function import FunctionSection
        from autopilot.config.validate.telemetry import TelemetrySection
        from autopilot.config.validate.templates import TemplateSection
        from autopilot.config.validate.watches import WatchSection

        _complete_class = type("Validator", (Validator, ConsulSection, ElectionSection,
                                             FunctionSection, WatchSection, TelemetrySection,
                                             TemplateSection),
                               {"__module__": __name__, "__qualname__": "Validator",
                                "__doc__": Validator.__doc__})
    return _complete_class

"""What starts a job: its ``when`` block read once into the event (code and sources) the
job waits for, following ContainerPilot's rules (see docs/jobs.md)."""

from __future__ import annotations

from autopilot.config.model import JobConfig
from autopilot.events import GLOBAL, SIGNAL, SIGNAL_SOURCES, STARTUP, Event


class Trigger:
    """What starts a job, from its ``when`` block."""

    def __init__(self, cfg: JobConfig) -> None:
        w = cfg.when
        self.periodic = w.interval is not None
        self.mode = w.source_mode
        self.code: str | None
        self.each = False
        if self.periodic:
            self.code, self.sources = STARTUP, frozenset({GLOBAL})
        elif w.once or w.each:
            self.code = w.once or w.each
            self.each = bool(w.each)
            # autopilot: a missing source means "global" (ContainerPilot never fires then)
            self.sources = frozenset(w.source or [GLOBAL])
        elif w.source and set(w.source) & SIGNAL_SOURCES:
            self.code, self.each, self.sources = SIGNAL, True, frozenset(w.source)
        elif w.source:
            self.code, self.sources = None, frozenset(w.source)  # never fires (as CP)
        else:
            self.code, self.sources = STARTUP, frozenset({GLOBAL})

    @property
    def on_startup(self) -> bool:
        return self.periodic or (self.code == STARTUP and GLOBAL in self.sources)

    def hooks(self, source: str, code: str) -> bool:
        """True if this job runs on ``code`` from ``source`` (e.g. another job's stopping)."""
        return self.code == code and source in self.sources

    def match(self, ev: Event) -> str | None:
        """The source this event satisfies, or None."""
        if self.code is None:
            return None
        if ev.code == SIGNAL:
            sig = ev.source
            if sig in self.sources and self.code in (SIGNAL, sig):
                return sig
            if self.code == sig and GLOBAL in self.sources:
                return GLOBAL
            return None
        if ev.code == self.code and ev.source in self.sources:
            return ev.source
        return None

"""A job's `when`: the event that starts it, or its period."""

from __future__ import annotations

from typing import Any

from autopilot.config import coerce
from autopilot.config.coerce import show
from autopilot.config.json5parse import Path
from autopilot.config.model import (
    WhenConfig,
)
from autopilot.config.validate.base import ValidatorBase
from autopilot.events import SIGNAL, SIGNAL_SOURCES, TRIGGER_CODES

GLOBAL_CODES = frozenset({"startup", "shutdown", "enterMaintenance", "exitMaintenance"})


class WhenSection(ValidatorBase):
    def when(self, raw: Any, path: Path) -> WhenConfig:
        cfg = WhenConfig()
        f = self.fields(path, raw, ["source", "sourceMode", "once", "each", "interval",
                                    "timeout"])
        if f is None:
            return cfg
        if "source" in f:
            sources = self.take(f, "source", coerce.to_str_list)
            if sources is not None:
                if not sources or any(not s for s in sources):
                    self.error(f["source"][1], "must not be empty")
                else:
                    cfg.source = sources
        mode = self.take(f, "sourceMode", coerce.to_str)
        if mode is not None:
            if mode.lower() not in ("any", "all"):
                self.error(f["sourceMode"][1], f'must be "any" or "all", got {show(mode)}')
            else:
                cfg.source_mode = mode.lower()  # type: ignore[assignment]
        for key in ("once", "each"):
            code = self.take(f, key, coerce.to_str)
            if code is None:
                continue
            if code not in TRIGGER_CODES:
                self.error(f[key][1], f"unknown event {show(code)} (one of "
                                      f"{', '.join(sorted(TRIGGER_CODES))})")
            else:
                setattr(cfg, key, code)
        cfg.interval = self.take(f, "interval", coerce.to_duration)
        if cfg.interval is not None and cfg.interval < 0.001:
            self.error(f["interval"][1], "must be at least 1ms")
            cfg.interval = None
        cfg.timeout = self.take(f, "timeout", coerce.to_duration)
        if cfg.timeout is not None and cfg.timeout < 0:
            self.error(f["timeout"][1], "must be >= 0")
        given = [k for k in ("interval", "once", "each") if k in f]
        if len(given) > 1:
            self.error(path, "can have only one of 'interval', 'once', or 'each'")
        # normalisations (see WhenConfig): signals and global codes
        if cfg.source and len(cfg.source) == 1 and cfg.source[0] in SIGNAL_SOURCES \
                and cfg.once is None and cfg.each is None:
            cfg.each = SIGNAL
        code = cfg.once or cfg.each
        if cfg.source is None and code is not None:
            if code in GLOBAL_CODES:
                cfg.source = ["global"]
            elif code in SIGNAL_SOURCES:
                cfg.source = [code]
                if cfg.each == code:
                    cfg.each = SIGNAL
                else:
                    cfg.once = SIGNAL
            else:  # accepted, as ContainerPilot does, but it can never fire
                self.warn(path, f"'{'once' if cfg.once else 'each'}: {code}' without a "
                                "'source' never fires (name the job or watch it comes from)")
        if cfg.source is not None and code is None and cfg.interval is None:
            self.warn(path, "has a 'source' but neither 'once' nor 'each': the job never runs")
        if cfg.source_mode == "all" and cfg.each is not None:
            pass  # fine: runs each time all sources have fired since the last run
        return cfg

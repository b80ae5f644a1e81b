"""A job's `health`: the check, its interval, TTL, timeout and failure threshold."""

from __future__ import annotations

from typing import Any

from autopilot.config import coerce
from autopilot.config.json5parse import Path
from autopilot.config.model import (
    HealthConfig,
)
from autopilot.config.validate.base import ValidatorBase
from autopilot.durations import format_duration


class HealthSection(ValidatorBase):
    def health(self, raw: Any, path: Path) -> HealthConfig | None:
        f = self.fields(path, raw, ["exec", "interval", "ttl", "timeout", "logging",
                                    "failureThreshold"])
        if f is None:
            return None
        cfg = HealthConfig()
        cfg.exec = self.take(f, "exec", coerce.to_exec)
        interval = self.take(f, "interval", coerce.to_duration)
        ttl = self.take(f, "ttl", coerce.to_duration)
        for key, value in (("interval", interval), ("ttl", ttl)):
            if value is not None and value <= 0:
                self.error(f[key][1], "must be > 0")
        # autopilot: absent interval/ttl get defaults (ContainerPilot refuses the config)
        if "interval" not in f:
            interval = min(5.0, ttl / 2) if ttl and ttl > 0 else 5.0
            self.warn(path, f"no 'interval': checking every {format_duration(interval)}")
        if "ttl" not in f:
            ttl = 3 * interval if interval and interval > 0 else 15.0
            self.warn(path, f"no 'ttl': using {format_duration(ttl)} (3 x interval)")
        cfg.interval = interval if interval and interval > 0 else 0.0
        cfg.ttl = ttl if ttl and ttl > 0 else 0.0
        timeout = self.take(f, "timeout", coerce.to_duration)
        if timeout is not None and timeout < 0:
            self.error(f["timeout"][1], "must be >= 0")
        cfg.timeout = timeout if timeout else (cfg.interval if cfg.interval > 0 else None)
        if "logging" in f:
            lf = self.fields(f["logging"][1], f["logging"][0], ["raw"])
            if lf is not None:
                cfg.logging_raw = self.take(lf, "raw", coerce.to_bool, False)
        threshold = self.take(f, "failureThreshold", coerce.to_int)
        if threshold is not None:
            if threshold < 1:
                self.error(f["failureThreshold"][1], "must be >= 1")
            else:
                cfg.failure_threshold = threshold
        if 0 < cfg.ttl < cfg.interval:
            self.warn(path, f"ttl ({format_duration(cfg.ttl)}) is shorter than interval "
                            f"({format_duration(cfg.interval)}): Consul will mark the service "
                            "critical between checks")
        return cfg

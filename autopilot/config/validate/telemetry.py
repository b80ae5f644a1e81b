"""The `telemetry` section: its listener, metrics and readiness."""

from __future__ import annotations

import re
from typing import Any

from autopilot.config import coerce
from autopilot.config.coerce import show
from autopilot.config.json5parse import Path
from autopilot.config.model import (
    Config,
    MetricConfig,
    ReadinessConfig,
    TelemetryConfig,
)
from autopilot.config.validate.base import ValidatorBase

METRIC_TYPES = ("counter", "gauge", "histogram", "summary")
_METRIC_PART = re.compile(r"^[a-zA-Z0-9_:]*$")


class TelemetrySection(ValidatorBase):
    def telemetry(self, raw: Any, path: Path, top: Config) -> TelemetryConfig | None:
        f = self.fields(path, raw, ["port", "interfaces", "tags", "metrics", "ready"])
        if f is None:
            return None
        cfg = TelemetryConfig()
        cfg.port = self.take(f, "port", coerce.to_port, 9090)
        if cfg.port == 0:
            cfg.port = 9090
        if "interfaces" in f:
            cfg.interfaces = self.interfaces(*f["interfaces"])
        cfg.tags = self.take(f, "tags", coerce.to_str_list, [])
        if "metrics" in f:
            cfg.metrics = self.each(f["metrics"], self.metric)
            seen: set[str] = set()
            for i, m in enumerate(cfg.metrics):
                if m.full_name in seen:
                    where = self.origin.get(id(m), (*f["metrics"][1], i))
                    self.error(where, f"duplicate metric {show(m.full_name)}")
                seen.add(m.full_name)
        if "ready" in f:
            cfg.ready = self.ready(*f["ready"])
        return cfg

    def metric(self, raw: Any, path: Path) -> MetricConfig | None:
        f = self.fields(path, raw, ["namespace", "subsystem", "name", "help", "type"])
        if f is None:
            return None
        cfg = MetricConfig(
            namespace=self.take(f, "namespace", coerce.to_str, ""),
            subsystem=self.take(f, "subsystem", coerce.to_str, ""),
            name=self.take(f, "name", coerce.to_str, ""),
            help=self.take(f, "help", coerce.to_str, ""),
        )
        if not cfg.name:
            self.error(self.path_of(f, "name", path), "is required")
        for key in ("namespace", "subsystem", "name"):
            if not _METRIC_PART.match(getattr(cfg, key)):
                self.error(f[key][1], "may contain only letters, digits, '_' and ':'")
        mtype = self.take(f, "type", coerce.to_str)
        if mtype is None:
            self.error((*path, "type"), "is required (counter, gauge, histogram or summary)")
        elif mtype.lower() not in METRIC_TYPES:
            self.error(f["type"][1], f"invalid metric type {show(mtype)} (counter, gauge, "
                                     "histogram or summary)")
        else:
            cfg.type = mtype.lower()  # type: ignore[assignment]
        return cfg

    def ready(self, raw: Any, path: Path) -> ReadinessConfig:
        if isinstance(raw, str):
            if raw.lower() != "all":
                self.error(path, f'must be "all", {{job: "name"}} or {{role: "primary", '
                                 f'job: "name"}}, got {show(raw)}')
            return ReadinessConfig()
        f = self.fields(path, raw, ["job", "role"])
        if f is None:
            return ReadinessConfig()
        job = self.take(f, "job", coerce.to_nonempty_str)
        role = self.take(f, "role", coerce.to_nonempty_str)
        if job is None:
            self.error((*path, "job"), "is required")
            return ReadinessConfig()
        if role is None:
            return ReadinessConfig(mode="job", job=job)
        if role not in ("primary", "replica"):
            self.error(f["role"][1], f'must be "primary" or "replica", got {show(role)}')
            return ReadinessConfig(mode="job", job=job)
        return ReadinessConfig(mode="role", job=job, role=role)

"""The `watches` section: the Consul services watched for changes."""

from __future__ import annotations

from typing import Any

from autopilot.config import coerce
from autopilot.config.coerce import show
from autopilot.config.json5parse import Path
from autopilot.config.model import (
    WatchConfig,
)
from autopilot.config.validate.base import NAME_RE, ValidatorBase


class WatchSection(ValidatorBase):
    def watch(self, raw: Any, path: Path) -> WatchConfig | None:
        f = self.fields(path, raw, ["name", "interval", "tag", "dc", "key", "keyprefix"])
        if f is None:
            return None
        name = self.take(f, "name", coerce.to_str, "")
        if "name" not in f:
            self.error((*path, "name"), "is required")
        elif not NAME_RE.match(name):
            self.error(f["name"][1], f"{show(name)} is not a valid watch name: it must start "
                                     "with a lower-case letter and contain only letters, "
                                     "digits and dashes (2 characters at least)")
        cfg = WatchConfig(name=name)
        interval = self.take(f, "interval", coerce.to_duration)
        if "interval" not in f:
            self.error((*path, "interval"), "is required and must be > 0")
        elif interval is not None and interval <= 0:
            self.error(f["interval"][1], "must be > 0")
        cfg.interval = interval or 0.0
        cfg.tag = self.take(f, "tag", coerce.to_str) or None
        cfg.dc = self.take(f, "dc", coerce.to_str) or None
        if "key" in f and "keyprefix" in f:
            self.error(path, "can have only one of 'key' and 'keyprefix'")
        for kind in ("key", "keyprefix"):
            if kind in f:
                key = self.take(f, kind, coerce.to_nonempty_str)
                if key is not None:
                    cfg.kind = kind  # type: ignore[assignment]
                    cfg.key = key.lstrip("/") if kind == "key" else key.lstrip("/")
        if cfg.kind != "service" and cfg.tag:
            self.error(f["tag"][1], "applies to service watches only, not to KV watches")
        return cfg

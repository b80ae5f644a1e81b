"""The `templates` section: consul-template-like files rendered from the catalog."""

from __future__ import annotations

import os
from typing import Any

from autopilot.config import coerce
from autopilot.config.coerce import Invalid
from autopilot.config.json5parse import Path
from autopilot.config.model import (
    TemplateConfig,
)
from autopilot.config.validate.base import ValidatorBase
from autopilot.durations import format_duration


class TemplateSection(ValidatorBase):
    def template(self, raw: Any, path: Path) -> TemplateConfig | None:
        f = self.fields(path, raw, ["source", "destination", "wait", "mode", "owner", "group",
                                    "command", "commandTimeout"])
        if f is None:
            return None
        cfg = TemplateConfig(source=self.take(f, "source", coerce.to_nonempty_str, ""),
                             destination=self.take(f, "destination", coerce.to_nonempty_str, ""))
        for key in ("source", "destination"):
            if key not in f:
                self.error((*path, key), "is required")
        if cfg.source and not os.path.isabs(cfg.source) and self.base_dir:
            cfg.source = os.path.join(self.base_dir, cfg.source)
        if "wait" in f:
            cfg.wait_min, cfg.wait_max = self.wait(*f["wait"])
        cfg.mode = self.take(f, "mode", coerce.to_mode, 0o644)
        cfg.owner = self.take(f, "owner", coerce.to_nonempty_str)
        cfg.group = self.take(f, "group", coerce.to_nonempty_str)
        cfg.command = self.take(f, "command", coerce.to_exec)
        cfg.command_timeout = self.take(f, "commandTimeout", coerce.to_duration, 30.0)
        self.positive(f, "commandTimeout", path, cfg.command_timeout)
        return cfg

    def wait(self, raw: Any, path: Path) -> tuple[float, float]:
        """consul-template's quiescence: ``"2s:10s"``, ``"2s"`` (max = 4 x min) or
        ``{min, max}``."""
        try:
            if isinstance(raw, dict):
                f = self.fields(path, raw, ["min", "max"])
                if f is None:
                    return 0.0, 0.0
                lo = self.take(f, "min", coerce.to_duration, 0.0)
                hi = self.take(f, "max", coerce.to_duration, 4 * lo)
            else:
                text = coerce.to_str(raw)
                lo_s, sep, hi_s = text.partition(":")
                lo = coerce.to_duration(lo_s)
                hi = coerce.to_duration(hi_s) if sep else 4 * lo
        except Invalid as exc:
            self.error(path, f'{exc} (expected "min:max" like "2s:10s")')
            return 0.0, 0.0
        if lo < 0 or hi < lo:
            self.error(path, f"needs 0 <= min <= max, got min {format_duration(lo)}, "
                             f"max {format_duration(hi)}")
        return lo, hi

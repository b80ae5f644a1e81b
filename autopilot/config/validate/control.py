"""The `control` section: the control socket."""

from __future__ import annotations

from typing import Any

from autopilot.config import coerce
from autopilot.config.json5parse import Path
from autopilot.config.model import (
    ControlConfig,
)
from autopilot.config.validate.base import ValidatorBase


class ControlSection(ValidatorBase):
    def control(self, raw: Any, path: Path) -> ControlConfig:
        cfg = ControlConfig()
        f = self.fields(path, raw, ["socket", "mode", "group"])
        if f is None:
            return cfg
        cfg.socket = self.take(f, "socket", coerce.to_nonempty_str, cfg.socket)
        cfg.mode = self.take(f, "mode", coerce.to_mode, cfg.mode)
        cfg.group = self.take(f, "group", coerce.to_nonempty_str)
        return cfg

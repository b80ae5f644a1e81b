"""The `logging` section: level, format and output."""

from __future__ import annotations

from typing import Any

from autopilot.config import coerce
from autopilot.config.coerce import show
from autopilot.config.json5parse import Path
from autopilot.config.model import (
    LoggingConfig,
)
from autopilot.config.validate.base import ValidatorBase

LOG_LEVELS = {"DEBUG", "INFO", "WARN", "ERROR", "FATAL", "PANIC"}
LOG_FORMATS = {"default", "text", "json"}


class LoggingSection(ValidatorBase):
    def logging(self, raw: Any, path: Path) -> LoggingConfig:
        cfg = LoggingConfig()
        f = self.fields(path, raw, ["level", "format", "output"])
        if f is None:
            return cfg
        level = self.take(f, "level", coerce.to_str)
        if level is not None:
            level = level.upper()
            level = "WARN" if level == "WARNING" else level
            if level not in LOG_LEVELS:
                self.error(f["level"][1], f"unknown log level {show(level)} (one of "
                                          "DEBUG, INFO, WARN, ERROR, FATAL, PANIC)")
            else:
                cfg.level = level
        fmt = self.take(f, "format", coerce.to_str)
        if fmt is not None:
            if fmt.lower() not in LOG_FORMATS:
                self.error(f["format"][1], f'unknown log format {show(fmt)} (one of "default", '
                                           '"text", "json")')
            else:
                cfg.format = fmt.lower()
        output = self.take(f, "output", coerce.to_str)
        if output is not None:
            if not output:
                self.error(f["output"][1], 'must not be empty ("stdout", "stderr" or a file path)')
            else:
                cfg.output = output
        return cfg

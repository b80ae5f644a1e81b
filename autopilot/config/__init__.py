"""Configuration: load -> render (Go template) -> parse (JSON5) -> validate -> typed model."""

from autopilot.config.model import Config, ConfigError

__all__ = ["Config", "ConfigError"]

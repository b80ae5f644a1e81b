"""Configuration: load -> render (Go template) -> parse (JSON5) -> validate -> typed model.

``load(path, environ)`` is what the runtime uses; ``render`` is the first stage alone (for
``autopilot render``); ``load_raw`` stops after JSON5 (for client verbs that only need the
control socket path of a config that may not validate on this machine).
"""

from autopilot.config.loader import load, load_raw, load_text, render
from autopilot.config.model import Config, ConfigError

__all__ = ["Config", "ConfigError", "load", "load_raw", "load_text", "render"]

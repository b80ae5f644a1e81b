"""Logging with structlog in ContainerPilot's three formats, to stdout, stderr or a file.

``default``: ``<RFC3339Nano UTC time> [<job>] [<pid>] msg`` (no level, as ContainerPilot);
other fields follow as ``key=value``. ``text``: logrus-style ``time=… level=… msg=… k=v``.
``json``: one JSON object per line with sorted keys (``level``, ``msg``, ``time``, fields).
A file output is reopened on SIGUSR1 so log rotation can move it away.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import IO, Any

import structlog

from autopilot.config.model import LoggingConfig

LEVELS = {
    "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
    "WARNING": logging.WARNING, "ERROR": logging.ERROR, "FATAL": logging.CRITICAL,
    "PANIC": logging.CRITICAL,
}
#: structlog method name -> logrus level name
LOGRUS = {"debug": "debug", "info": "info", "warning": "warning", "warn": "warning",
          "error": "error", "exception": "error", "critical": "fatal", "fatal": "fatal",
          "panic": "panic"}


def rfc3339nano(ts: float) -> str:
    """Go's RFC3339Nano in UTC: fractional seconds with trailing zeros trimmed."""
    secs = int(ts)
    frac = f"{int(round((ts - secs) * 1e9)):09d}".rstrip("0")
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{base}.{frac}Z" if frac else f"{base}Z"


class Output:
    """A line sink that can be reopened (SIGUSR1) and written from any thread."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._stream: IO[str] | None = None
        self._own = False
        self.open()

    def open(self) -> None:
        if self.target == "stdout":
            self._stream, self._own = sys.stdout, False
        elif self.target == "stderr":
            self._stream, self._own = sys.stderr, False
        else:
            self._stream = open(self.target, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            self._own = True

    def reopen(self) -> None:
        with self._lock:
            old, own = self._stream, self._own
            self.open()
            if own and old is not None:
                old.close()

    def write_line(self, line: str) -> None:
        with self._lock:
            stream = self._stream
            if stream is None:
                return
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        with self._lock:
            if self._own and self._stream is not None:
                self._stream.close()
            self._stream = None


def _scalar(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str) if isinstance(
        v, (dict, list, tuple)) else str(v)


def _quote(v: str) -> str:
    """logrus quotes a value unless it is made of plain characters only."""
    if v and all(c.isalnum() or c in "-._/@^+" for c in v):
        return v
    return json.dumps(v)


def _fields(event: dict[str, Any], skip: tuple[str, ...]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in sorted(event.items()) if k not in skip and v is not None]


def render_default(event: dict[str, Any]) -> str:
    parts = [rfc3339nano(event.pop("_ts"))]
    event.pop("level", None)
    for key in ("job", "check"):
        if event.get(key) is not None:
            parts.append(str(event.pop(key)))
            break
    if event.get("pid") is not None:
        parts.append(str(event.pop("pid")))
    parts.append(str(event.pop("event", "")))
    exc = event.pop("exception", None)
    parts += [f"{k}={_quote(_scalar(v))}" for k, v in _fields(event, ("logger",))]
    line = " ".join(parts)
    return line + ("\n" + exc if exc else "")


def render_text(event: dict[str, Any]) -> str:
    ts = rfc3339nano(event.pop("_ts"))
    level = event.pop("level", "info")
    msg = str(event.pop("event", ""))
    parts = [f"time={_quote(ts)}", f"level={level}", f"msg={_quote(msg)}"]
    parts += [f"{k}={_quote(_scalar(v))}" for k, v in _fields(event, ("logger",))]
    return " ".join(parts)


def render_json(event: dict[str, Any]) -> str:
    ts = rfc3339nano(event.pop("_ts"))
    out = {k: v for k, v in event.items() if k not in ("logger",) and v is not None}
    out["msg"] = str(out.pop("event", ""))
    out["time"] = ts
    return json.dumps(out, sort_keys=True, default=str)


RENDERERS = {"default": render_default, "text": render_text, "json": render_json}


class _Logger:
    """structlog's final logger: writes the rendered line to the current Output."""

    def __init__(self, out: Output) -> None:
        self._out = out

    def msg(self, line: str) -> None:
        self._out.write_line(line)

    debug = info = warning = warn = error = critical = fatal = exception = msg


_output: Output | None = None


def _stamp(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event["_ts"] = time.time()
    event["level"] = LOGRUS.get(method, method)
    return event


def configure(cfg: LoggingConfig | None = None) -> Output:
    """Set up structlog for the whole process; returns the output (for reopen/close)."""
    global _output
    cfg = cfg or LoggingConfig()
    level = LEVELS.get(cfg.level.upper(), logging.INFO)
    fmt = cfg.format.lower()
    renderer = RENDERERS.get(fmt, render_default)
    if _output is not None:
        _output.close()
    out = _output = Output(cfg.output)

    def render(_: Any, __: str, event: dict[str, Any]) -> str:
        if event.get("exc_info"):
            event.pop("exc_info")
            import traceback

            exc = sys.exc_info()
            if exc[0] is not None:
                event["exception"] = "".join(traceback.format_exception(*exc)).rstrip()
        return renderer(event)

    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, _stamp, render],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *args: _Logger(out),
        cache_logger_on_first_use=False,
    )
    # stdlib logging (aiohttp, urllib3 …) goes through the same output
    root = logging.getLogger()
    root.handlers[:] = [_StdlibBridge()]
    root.setLevel(max(level, logging.WARNING) if level < logging.WARNING else level)
    return out


class _StdlibBridge(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        logger = structlog.get_logger(record.name)
        method = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
                  logging.ERROR: "error"}.get(record.levelno, "critical")
        getattr(logger, method)(record.getMessage(), logger_name=record.name)


def reopen() -> None:
    """SIGUSR1: reopen the log file (a no-op for stdout/stderr)."""
    if _output is not None:
        _output.reopen()

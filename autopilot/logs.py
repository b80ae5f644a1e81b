"""Logging in ContainerPilot's three formats, to stdout, stderr or a file.

``default``: ``<RFC3339Nano UTC time> [<job>] [<pid>] msg`` (no level, as ContainerPilot);
other fields follow as ``key=value``. ``text``: logrus-style ``time=… level=… msg=… k=v``.
``json``: one JSON object per line with sorted keys (``level``, ``msg``, ``time``, fields).
A file output is reopened on SIGUSR1 so log rotation can move it away.

Every module logs through ``get_logger(name)``: structlog's calling convention
(``log.info("event", key=value)``, ``log.bind(job=…)``, ``log.exception(…)``, ``%``
arguments), without structlog. structlog and what it imports (datetime, pickle, uuid,
platform, random…) took 1.8 MB of every supervisor's memory, more than a tenth of it,
for a processor chain of two functions and renderers that were ours anyway
(docs/performance.md). ``capture()`` records events as dicts for tests, as
``structlog.testing.capture_logs`` did.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from autopilot.config.model import LoggingConfig

LEVELS = {
    "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
    "WARNING": logging.WARNING, "ERROR": logging.ERROR, "FATAL": logging.CRITICAL,
    "PANIC": logging.CRITICAL,
}
#: level method name -> logrus level name
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


def _json_dumps(v: Any, **kw: Any) -> str:
    """``json.dumps``, imported at the first line that needs it: a supervisor logging in
    the default format with plain values never loads ``json`` (0.2 MB; docs/performance.md)."""
    import json

    return json.dumps(v, **kw)


def _json_string(v: str) -> str:
    """``json.dumps(v)`` for a string: what it calls itself (``json.encoder``'s C
    ``encode_basestring_ascii``), without the ``json`` package, imported with the first
    value that needs quotes (this function then replaces itself)."""
    global _json_string
    try:
        from _json import encode_basestring_ascii as encode
    except ImportError:  # pragma: no cover - a Python without the C accelerator
        encode = _json_dumps
    _json_string = encode
    return encode(v)


def _scalar(v: Any) -> str:
    return v if isinstance(v, str) else _json_dumps(v, default=str) if isinstance(
        v, (dict, list, tuple)) else str(v)


def _quote(v: str) -> str:
    """logrus quotes a value unless it is made of plain characters only (as ``json.dumps``
    would: tests/unit/test_logs.py compares both)."""
    if v and all(c.isalnum() or c in "-._/@^+" for c in v):
        return v
    return _json_string(v)


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
    return _json_dumps(out, sort_keys=True, default=str)


RENDERERS = {"default": render_default, "text": render_text, "json": render_json}


#: level method -> its number (structlog's names; ``exception`` logs at ``error``)
_LEVEL = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}

_output: Output | None = None
_renderer = render_default
_min_level = logging.INFO
_configured = False
_captured: list[dict[str, Any]] | None = None


def _interpolate(event: Any, args: tuple[Any, ...]) -> Any:
    """``log.info("a %s", x)``: %-formatting, as structlog (a single mapping is used as
    the mapping)."""
    if len(args) == 1 and isinstance(args[0], dict) and args[0]:
        return event % args[0]
    return event % args


def _render(event: dict[str, Any]) -> str:
    if event.get("exc_info"):
        event.pop("exc_info")
        import traceback

        exc = sys.exc_info()
        if exc[0] is not None:
            event["exception"] = "".join(traceback.format_exception(*exc)).rstrip()
    return _renderer(event)


class Logger:
    """A logger with bound fields; every call reads the current configuration, so loggers
    made at import time follow ``configure()``."""

    __slots__ = ("_context",)

    def __init__(self, context: dict[str, Any] | None = None) -> None:
        self._context = context

    def bind(self, **fields: Any) -> Logger:
        return Logger({**self._context, **fields} if self._context else fields)

    def _log(self, method: str, event: Any, args: tuple[Any, ...],
             fields: dict[str, Any]) -> None:
        if _LEVEL[method] < _min_level:
            return
        if args:
            event = _interpolate(event, args)
        record = {**self._context, **fields} if self._context else fields
        record["event"] = event
        if _captured is not None:
            record["log_level"] = method
            _captured.append(record)
            return
        record["_ts"] = time.time()
        record["level"] = LOGRUS[method]
        out = _output if _output is not None else _default_output()
        out.write_line(_render(record))

    def debug(self, event: Any, *args: Any, **fields: Any) -> None:
        if _min_level <= logging.DEBUG:
            self._log("debug", event, args, fields)

    def info(self, event: Any, *args: Any, **fields: Any) -> None:
        self._log("info", event, args, fields)

    def warning(self, event: Any, *args: Any, **fields: Any) -> None:
        self._log("warning", event, args, fields)

    def error(self, event: Any, *args: Any, **fields: Any) -> None:
        self._log("error", event, args, fields)

    def critical(self, event: Any, *args: Any, **fields: Any) -> None:
        self._log("critical", event, args, fields)

    def exception(self, event: Any, *args: Any, **fields: Any) -> None:
        fields.setdefault("exc_info", True)
        self._log("error", event, args, fields)

    warn = warning
    fatal = critical
    msg = info


_ROOT = Logger()


def get_logger(name: str | None = None) -> Logger:
    """The logger for a module (``name`` documents who logs; it is not a field)."""
    return _ROOT


def _default_output() -> Output:
    """Logging before ``configure()`` (tests, library use): the default format to stdout."""
    global _output
    _output = Output("stdout")
    return _output


def is_configured() -> bool:
    return _configured


def configure(cfg: LoggingConfig | None = None) -> Output:
    """Set up logging for the whole process; returns the output (for reopen/close)."""
    global _output, _renderer, _min_level, _configured
    cfg = cfg or LoggingConfig()
    level = LEVELS.get(cfg.level.upper(), logging.INFO)
    if _output is not None:
        _output.close()
    out = _output = Output(cfg.output)
    _renderer = RENDERERS.get(cfg.format.lower(), render_default)
    _min_level = level
    _configured = True
    # stdlib logging (aiohttp, urllib3 …) goes through the same output
    root = logging.getLogger()
    root.handlers[:] = [_StdlibBridge()]
    root.setLevel(max(level, logging.WARNING) if level < logging.WARNING else level)
    return out


@contextmanager
def capture() -> Iterator[list[dict[str, Any]]]:
    """Record every event (at the configured level) as a dict instead of writing it:
    ``event``, ``log_level`` and the fields (what ``structlog.testing.capture_logs`` gave)."""
    global _captured
    saved, _captured = _captured, []
    try:
        yield _captured
    finally:
        _captured = saved


class _StdlibBridge(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        method = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
                  logging.ERROR: "error"}.get(record.levelno, "critical")
        getattr(_ROOT, method)(record.getMessage(), logger_name=record.name)


def reopen() -> None:
    """SIGUSR1: reopen the log file (a no-op for stdout/stderr)."""
    if _output is not None:
        _output.reopen()

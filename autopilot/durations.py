"""Go durations, the one place autopilot reads and writes them.

Consul speaks Go durations on the wire ("10s", "1m30s", "500ms") and ContainerPilot configs
are full of them, so there is one parser and one writer for both sides:

- ``parse_go_ns`` / ``format_go_ns``: Go's ``time.ParseDuration`` and ``Duration.String``
  to the letter, in nanoseconds, with Go's error texts (the embedded catalog answers what a
  real agent would);
- ``parse_go_duration`` / ``parse_duration``: the same in seconds for the config, where a
  bare number (``5``) or integer string (``"5"``) means seconds as in ContainerPilot's
  ``timing.ParseDuration``;
- ``to_go``: seconds to the string a Consul request field wants (``TTL``, ``LockDelay``,
  a blocking query's ``wait``);
- ``format_duration``: a short spelling of seconds for messages ("5s", "500ms", "1.5s").
"""

from __future__ import annotations

import re

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")
_INT = re.compile(r"[+-]?\d+")
SECOND = 1_000_000_000


class DurationError(ValueError):
    pass


def parse_go_ns(text: str) -> int:
    """Parse a Go duration string into nanoseconds; raise DurationError with Go's message."""
    orig = text
    if not isinstance(text, str):
        raise DurationError(f'time: invalid duration "{orig}"')
    if text[:1] in "+-" and text:
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    else:
        sign = 1
    if text == "0":
        return 0
    if not text:
        raise DurationError(f'time: invalid duration "{orig}"')
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _PART.match(text, pos)
        if not m or m.group(1) in ("", "."):
            if re.fullmatch(r"\d+(\.\d*)?|\.\d+", text[pos:]):
                raise DurationError(f'time: missing unit in duration "{orig}"')
            raise DurationError(f'time: invalid duration "{orig}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * int(round(total))


def _frac(value: int, unit: int) -> str:
    whole, rem = divmod(value, unit)
    if not rem:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{rem:0{digits}d}".rstrip("0")


def format_go_ns(ns: int) -> str:
    """Format nanoseconds the way Go's Duration.String does (e.g. 24h0m0s, 1.5s, 500ms)."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{_frac(u, 1_000)}µs"
    if u < SECOND:
        return f"{sign}{_frac(u, 1_000_000)}ms"
    hours, rem = divmod(u, 3600 * SECOND)
    minutes, rem = divmod(rem, 60 * SECOND)
    secs = _frac(rem, SECOND) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}"
    if minutes:
        return f"{sign}{minutes}m{secs}"
    return sign + secs


def to_go(seconds: float) -> str:
    """Seconds as the Go duration a Consul request field takes: 10.0 -> "10s",
    0.05 -> "50ms", 90 -> "1m30s"."""
    return format_go_ns(int(round(seconds * SECOND)))


def parse_go_duration(text: str) -> float:
    """A Go duration string in seconds; ValueError (without Go's "time: ") if malformed."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    try:
        return parse_go_ns(s) / SECOND
    except DurationError as exc:
        raise ValueError(str(exc).removeprefix("time: ").replace(f'"{s}"', f'"{text}"')) \
            from None


def parse_duration(value: object) -> float:
    """ContainerPilot's duration: number or integer string = seconds, else a Go duration."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {str(value).lower()}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        s = value.strip()
        if _INT.fullmatch(s):
            return float(int(s))
        return parse_go_duration(s)
    raise ValueError(f"expected a duration, got {type(value).__name__}")


def format_duration(seconds: float) -> str:
    """A short Go-style spelling of seconds, for messages."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms"
    return f"{seconds:g}s"

"""Go-style durations (``time.ParseDuration`` / ``Duration.String``).

Consul speaks Go durations on the wire ("10s", "1m30s", "24h0m0s"); error texts quote Go's
own messages so clients see what a real agent would answer.
"""

from __future__ import annotations

import re

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")
SECOND = 1_000_000_000


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> int:
    """Parse a Go duration string into nanoseconds; raise DurationError with Go's message."""
    orig = text
    if not isinstance(text, str):
        raise DurationError(f'time: invalid duration "{orig}"')
    sign = 1
    if text[:1] in "+-" and text:
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise DurationError(f'time: invalid duration "{orig}"')
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _PART.match(text, pos)
        if not m or m.group(1) in ("", "."):
            if re.fullmatch(r"\d+(\.\d*)?", text[pos:]):
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


def format_duration(ns: int) -> str:
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

"""Durations as ContainerPilot reads them: a Go duration string or a bare number of seconds.

Go's syntax is kept exactly (``"1h30m"``, ``"1.5s"``, ``"300ms"``, ``"-2s"``), so configs
written for ContainerPilot mean the same here. A bare integer (``5``) or integer string
(``"5"``) means seconds, as in ContainerPilot's ``timing.ParseDuration``.
"""

from __future__ import annotations

import re

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_INT = re.compile(r"[+-]?\d+")


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string into seconds; ValueError if malformed."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            if re.match(r"\d+\.?\d*$|\.\d+$", s[pos:]):
                raise ValueError(f'missing unit in duration "{text}"')
            raise ValueError(f'invalid duration "{text}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


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
    """A Go-style spelling, for messages and for Consul fields that want a string."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms"
    return f"{seconds:g}s"

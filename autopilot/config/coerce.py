"""Weak typing, as ContainerPilot's decoder (mapstructure, ``WeaklyTypedInput``) does it.

``"103"`` is accepted for an int, ``5`` for a string, a single string for a list of
strings. Each converter returns the Python value or raises ``Invalid`` with a message
that the validator prefixes with the field path.
"""

from __future__ import annotations

import math
import signal
from typing import Any

from autopilot.durations import parse_duration


class Invalid(ValueError):
    """A value of the wrong type or out of range; the message omits the field path."""


def show(value: Any) -> str:
    """A value as it would appear in the config file, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _format_number(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)


def to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"  # mapstructure's weak bool -> string
    if isinstance(value, int | float):
        return _format_number(value)
    raise Invalid(f"expected a string, got {show(value)}")


def to_nonempty_str(value: Any) -> str:
    s = to_str(value)
    if not s:
        raise Invalid("must not be empty")
    return s


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise Invalid(f"expected an integer, got {value}")
        return int(value)  # truncated, like mapstructure
    if isinstance(value, str):
        s = value.strip()
        if s == "":
            return 0
        try:
            return int(s, 0)
        except ValueError:
            try:
                f = float(s)
            except ValueError:
                raise Invalid(f"expected an integer, got {show(value)}") from None
            if math.isnan(f) or math.isinf(f):
                raise Invalid(f"expected an integer, got {show(value)}") from None
            return int(f)
    raise Invalid(f"expected an integer, got {show(value)}")


_TRUE = {"1", "t", "true"}
_FALSE = {"0", "f", "false", ""}


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        s = value.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    raise Invalid(f"expected true or false, got {show(value)}")


def to_str_list(value: Any) -> list[str]:
    """A list of strings; a single scalar becomes a one-item list."""
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            try:
                out.append(to_str(item))
            except Invalid as exc:
                raise Invalid(f"item {i}: {exc}") from None
        return out
    return [to_str(value)]


def to_str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise Invalid(f"expected an object, got {show(value)}")
    out = {}
    for k, v in value.items():
        if v is None:
            out[k] = ""
        elif isinstance(v, bool):
            out[k] = "true" if v else "false"
        else:
            try:
                out[k] = to_str(v)
            except Invalid as exc:
                raise Invalid(f'key "{k}": {exc}') from None
    return out


def to_duration(value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise Invalid(f"{exc} (use a number of seconds or a Go duration like \"1m30s\")") \
            from None
    if math.isnan(seconds) or math.isinf(seconds):
        raise Invalid(f"invalid duration {show(value)}")
    return seconds


def to_exec(value: Any) -> list[str]:
    """A command: an array ``[cmd, args…]`` or a string split like a shell would (quotes
    honoured; no variable expansion, no pipes)."""
    if isinstance(value, list):
        if not value:
            raise Invalid("must not be empty")
        argv = to_str_list(value)
        if not argv[0]:
            raise Invalid("the command (first item) must not be empty")
        return argv
    text = to_str(value)
    import shlex  # a command given as a string: a list needs no shell splitting (28 KB)

    try:
        argv = shlex.split(text)
    except ValueError:
        # an unbalanced quote ("logger it's up"): split as ContainerPilot did, on single
        # spaces with the quotes kept, so images that ran under it keep starting
        argv = [w for w in text.strip().split(" ") if w]
    if not argv:
        raise Invalid("must not be empty")
    return argv


def to_port(value: Any) -> int:
    port = to_int(value)
    if not 0 <= port <= 65535:
        raise Invalid(f"must be a port number between 0 and 65535, got {port}")
    return port


def to_mode(value: Any) -> int:
    """A file mode, always written in octal digits: ``"0660"``, ``"660"`` or ``660``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Invalid(f"expected an octal file mode like \"0660\", got {show(value)}")
    text = str(value).strip()
    if text.lower().startswith("0o"):
        text = text[2:]
    if not text or any(c not in "01234567" for c in text):
        raise Invalid(f"expected an octal file mode like \"0660\", got {show(value)}")
    mode = int(text, 8)
    if mode > 0o7777:
        raise Invalid(f"file mode {show(value)} is out of range (at most 07777)")
    return mode


def to_signal(value: Any) -> str:
    """A signal given as ``SIGINT``, ``INT``, ``int`` or a number; returns ``SIGINT``."""
    if isinstance(value, bool):
        raise Invalid(f"expected a signal name like \"SIGINT\", got {show(value)}")
    if isinstance(value, float) and not value.is_integer():
        raise Invalid(f"expected a signal name like \"SIGINT\", got {show(value)}")
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        num = int(value)
        try:
            return signal.Signals(num).name
        except ValueError:
            raise Invalid(f"unknown signal number {num}") from None
    if not isinstance(value, str):
        raise Invalid(f"expected a signal name like \"SIGINT\", got {show(value)}")
    name = value.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in signal.Signals.__members__:
        raise Invalid(f"unknown signal {show(value)}")
    return signal.Signals[name].name

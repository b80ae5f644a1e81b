"""Go's value formatting: what `{{ . }}`, `print` and `printf` make of a value (Go's
`fmt` package, the part templates reach)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any


def _go_float(v: float, verb: str = "g", prec: int = -1) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if prec >= 0:
        return format(v, f".{prec}{verb}")
    # shortest representation that round-trips, Go's %v / %g rules
    if v == 0:
        return "-0" if math.copysign(1, v) < 0 else "0"
    sign, digits, exp = Decimal(repr(v)).normalize().as_tuple()
    ds = "".join(map(str, digits))
    nd = len(ds)
    dp = nd + exp  # position of the decimal point
    e10 = dp - 1
    neg = "-" if sign else ""
    if e10 < -4 or e10 >= 6:  # Go: "if precision was the shortest possible, use 6"
        mant = ds[0] + ("." + ds[1:] if nd > 1 else "")
        return f"{neg}{mant}e{'-' if e10 < 0 else '+'}{abs(e10):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{ds}"
    if dp >= nd:
        return f"{neg}{ds}{'0' * (dp - nd)}"
    return f"{neg}{ds[:dp]}.{ds[dp:]}"


def go_format(v: Any) -> str:
    """``fmt.Sprint`` of one value."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_float(v, "g")
    if isinstance(v, list | tuple):
        return "[" + " ".join(go_format(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "map[" + " ".join(f"{go_format(k)}:{go_format(v[k])}" for k in sorted(v)) + "]"
    return str(v)


def go_type(v: Any) -> str:
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list | tuple):
        kinds = {go_type(x) for x in v}
        return f"[]{kinds.pop()}" if len(kinds) == 1 else "[]interface {}"
    if isinstance(v, Mapping):
        return "map[string]string"
    return type(v).__name__


def go_quote(s: str) -> str:
    """``strconv.Quote``."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\a":
            out.append("\\a")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\v":
            out.append("\\v")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_VERB = re.compile(r"%([-+# 0]*)(\*|\d+)?(?:\.(\*|\d*))?([a-zA-Z%])")


def _bad_verb(verb: str, v: Any) -> str:
    if v is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({go_type(v)}={go_format(v)})"


def _pad(s: str, flags: str, width: int | None, zero_ok: bool = False) -> str:
    if width is None or len(s) >= width:
        return s
    if "-" in flags:
        return s.ljust(width)
    if "0" in flags and zero_ok:
        sign = s[0] if s and s[0] in "+- " else ""
        return sign + s[len(sign):].rjust(width - len(sign), "0")
    return s.rjust(width)


def _rune(v: int) -> str:
    """The character for a code point; Go prints U+FFFD for an invalid one."""
    return chr(v) if 0 <= v <= 0x10FFFF and not 0xD800 <= v <= 0xDFFF else "\ufffd"


def _fmt_one(verb: str, flags: str, width: int | None, prec: int | None, v: Any) -> str:
    plus = "+" in flags
    sharp = "#" in flags
    space = " " in flags
    if isinstance(v, list | tuple) and verb not in "vTsq":
        return "[" + " ".join(_fmt_one(verb, flags, None, prec, x) for x in v) + "]"
    if verb == "T":
        return _pad(go_type(v), flags, width)
    if verb == "v":
        if sharp and isinstance(v, str):
            s = go_quote(v)
        elif isinstance(v, float) and prec is not None:
            s = _go_float(v, "g", prec)
        else:
            s = go_format(v)
        if plus and isinstance(v, int | float) and not isinstance(v, bool) and v >= 0:
            s = "+" + s
        return _pad(s, flags, width, zero_ok=isinstance(v, int | float))
    if verb == "t":
        return _pad(go_format(v), flags, width) if isinstance(v, bool) else _bad_verb(verb, v)
    if verb in "sq":
        if isinstance(v, list | tuple):
            return "[" + " ".join(_fmt_one(verb, flags, None, prec, x) for x in v) + "]"
        if verb == "q" and isinstance(v, int) and not isinstance(v, bool):
            return _pad("'" + _rune(v) + "'", flags, width)
        if not isinstance(v, str):
            return _bad_verb(verb, v)
        s = v[:prec] if prec is not None else v
        return _pad(go_quote(s) if verb == "q" else s, flags, width)
    if verb in "dboOxXcU":
        if verb in "xX" and isinstance(v, str):
            h = v.encode().hex()
            return _pad(h.upper() if verb == "X" else h, flags, width)
        if not isinstance(v, int) or isinstance(v, bool):
            return _bad_verb(verb, v)
        if verb == "c":
            return _pad(_rune(v), flags, width)
        if verb == "U":
            return _pad(f"U+{v:04X}", flags, width)
        base = {"d": "d", "b": "b", "o": "o", "O": "o", "x": "x", "X": "X"}[verb]
        s = format(abs(v), base)
        if sharp or verb == "O":
            s = {"b": "0b", "o": "0", "O": "0o", "x": "0x", "X": "0X"}.get(verb, "") + s
        sign = "-" if v < 0 else "+" if plus else " " if space else ""
        return _pad(sign + s, flags, width, zero_ok=True)
    if verb in "eEfFgG":
        if not isinstance(v, float):
            return _bad_verb(verb, v)
        if verb in "gG" and prec is None:
            s = _go_float(v, "g")
            s = s.upper() if verb == "G" else s
        else:
            s = _go_float(v, verb.lower() if verb == "F" else verb, 6 if prec is None else prec)
        if plus and v >= 0:
            s = "+" + s
        elif space and v >= 0:
            s = " " + s
        return _pad(s, flags, width, zero_ok=True)
    return f"%!{verb}({go_type(v)}={go_format(v)})"


def go_sprintf(fmt: str, *args: Any) -> str:
    """``fmt.Sprintf`` for the common verbs (v s q d b o x X c U e f g t T %)."""
    out: list[str] = []
    pos = 0
    ai = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width_s, prec_s, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        width = prec = None
        if width_s == "*":
            width = args[ai] if ai < len(args) and isinstance(args[ai], int) else None
            ai += 1
        elif width_s:
            width = int(width_s)
        if prec_s == "*":
            prec = args[ai] if ai < len(args) and isinstance(args[ai], int) else None
            ai += 1
        elif prec_s is not None:
            prec = int(prec_s) if prec_s else 0
        if width is not None and not -1_000_000 <= width <= 1_000_000:
            out.append("%!(BADWIDTH)")  # Go refuses absurd widths the same way
            width = None
        if prec is not None and not 0 <= prec <= 1_000_000:
            out.append("%!(BADPREC)")
            prec = None
        if ai >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_fmt_one(verb, flags, width, prec, args[ai]))
        ai += 1
    out.append(fmt[pos:])
    if ai < len(args):
        extra = ", ".join(f"{go_type(a)}={go_format(a)}" for a in args[ai:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


# ----------------------------------------------------------------------------------------

"""The functions a template can call: Go's built-ins and ContainerPilot's extras (Go's
text/template/funcs.go), and Go's truth."""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from autopilot.gotemplate.errors import ExecError
from autopilot.gotemplate.fmt import go_format, go_quote, go_sprintf, go_type

MAX_LOOP = 100_000  # `loop` refuses to build bigger lists (a typo must not eat the memory)


def truth(v: Any) -> bool:
    """Go template truth: false, 0, nil and empty strings/lists/maps are false."""
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v != 0
    if isinstance(v, str | list | tuple | Mapping):
        return len(v) > 0
    return True


NOARG = object()


def _want_str(name: str, v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is None or isinstance(v, list | tuple | Mapping):
        raise ExecError(f"{name}: expected a string, got {go_type(v)}")
    return go_format(v)


def _want_int(name: str, v: Any) -> int:
    if isinstance(v, bool):
        raise ExecError(f"{name}: expected an integer, got bool")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            raise ExecError(f"{name}: cannot convert {go_quote(v)} to an integer") from None
    raise ExecError(f"{name}: expected an integer, got {go_type(v)}")


def _kind(v: Any) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number" if isinstance(v, int) else "float"
    if isinstance(v, str):
        return "string"
    return "other"


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise ExecError("eq: missing argument for comparison")
    for b in others:
        ka, kb = _kind(a), _kind(b)
        if "other" in (ka, kb):
            if a == b:
                return True
            raise ExecError(f"eq: invalid type for comparison: {go_type(a)}, {go_type(b)}")
        if ka != kb and "nil" not in (ka, kb):
            raise ExecError(f"eq: incompatible types for comparison: {go_type(a)} and "
                             f"{go_type(b)}")
        if a == b:
            return True
    return False


def _order(name: str, a: Any, b: Any) -> int:
    ka, kb = _kind(a), _kind(b)
    if ka in ("bool", "nil", "other") or kb in ("bool", "nil", "other"):
        raise ExecError(f"{name}: invalid type for comparison: {go_type(a)}, {go_type(b)}")
    if ka != kb:
        raise ExecError(f"{name}: incompatible types for comparison: {go_type(a)} and "
                         f"{go_type(b)}")
    return (a > b) - (a < b)


def _index(item: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(item, Mapping):
            if not isinstance(k, str):
                raise ExecError(f"index: map key must be a string, got {go_type(k)}")
            item = item.get(k, "")
        elif isinstance(item, list | tuple | str):
            if not isinstance(k, int) or isinstance(k, bool):
                raise ExecError(f"index: cannot index with {go_type(k)}")
            if not 0 <= k < len(item):
                raise ExecError(f"index: index out of range: {k}")
            item = item[k] if not isinstance(item, str) else item.encode()[k]
        elif item is None:
            raise ExecError("index: index of untyped nil")
        else:
            raise ExecError(f"index: can't index item of type {go_type(item)}")
    return item


def _slice(item: Any, *idx: Any) -> Any:
    if not isinstance(item, list | tuple | str):
        raise ExecError(f"slice: can't slice item of type {go_type(item)}")
    if len(idx) > 3 or (len(idx) == 3 and isinstance(item, str)):
        raise ExecError("slice: too many slice indexes")
    bounds = [_want_int("slice", x) for x in idx]
    lo = bounds[0] if bounds else 0
    hi = bounds[1] if len(bounds) > 1 else len(item)
    if not 0 <= lo <= hi <= len(item):
        raise ExecError(f"slice: index out of range: {lo}:{hi}")
    return item[lo:hi]


def _length(v: Any) -> int:
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, list | tuple | Mapping):
        return len(v)
    raise ExecError(f"len: len of type {go_type(v)}")


def _sprint(*args: Any) -> str:
    out = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_format(a))
    return "".join(out)


def _js_escape(s: str) -> str:
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ch == '"':
            out.append('\\"')
        elif ch in "<>&=":
            out.append(f"\\u{ord(ch):04X}")
        elif ord(ch) < 0x20:
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, f"\\u{ord(ch):04X}"))
        else:
            out.append(ch)
    return "".join(out)


def _html_escape(s: str) -> str:
    return html.escape(s, quote=True).replace("&#x27;", "&#39;").replace("&quot;", "&#34;") \
        .replace("\0", "\ufffd")


def _default(default: Any, value: Any = NOARG) -> str:
    """ContainerPilot's ``default``: ``{{ .X | default "y" }}`` -> .X if it is a non-empty
    string, else the default (always a string, as in ContainerPilot)."""
    if isinstance(value, str) and value != "":
        return value
    return default if isinstance(default, str) else go_format(default)


def _split(sep: Any, s: Any) -> list[str]:
    """``split sep s``; surrounding whitespace is trimmed and "" gives an empty list."""
    sep, s = _want_str("split", sep), _want_str("split", s).strip()
    if not s:
        return []
    return list(s) if sep == "" else s.split(sep)


def _join(sep: Any, items: Any) -> str:
    sep = _want_str("join", sep)
    if isinstance(items, str):
        return items
    if not isinstance(items, list | tuple):
        raise ExecError(f"join: expected a list, got {go_type(items)}")
    return sep.join(go_format(x) for x in items)


def _replace_all(old: Any, new: Any, s: Any) -> str:
    return _want_str("replaceAll", s).replace(_want_str("replaceAll", old),
                                              _want_str("replaceAll", new))


_GO_EXPAND = re.compile(r"\$(\$|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def _regex_replace_all(pattern: Any, repl: Any, s: Any) -> str:
    """Go's ``Regexp.ReplaceAllString``: ``$1``, ``${1}``, ``${name}`` in the replacement
    (``$1x`` means the group named ``1x``, which does not exist: empty)."""
    pattern, repl = _want_str("regexReplaceAll", pattern), _want_str("regexReplaceAll", repl)
    s = _want_str("regexReplaceAll", s)
    try:
        rx = re.compile(re.sub(r"\(\?<(?![=!])", "(?P<", pattern))
    except re.error as exc:
        raise ExecError(f"regexReplaceAll: invalid regexp {go_quote(pattern)}: {exc}") \
            from None

    def expand(m: re.Match[str]) -> str:
        def group(g: re.Match[str]) -> str:
            if g.group(1) == "$":
                return "$"
            name = g.group(2) or g.group(3)
            try:
                value = m.group(int(name)) if name.isdigit() else m.group(name)
            except (IndexError, re.error):
                return ""
            return value or ""

        return _GO_EXPAND.sub(group, repl)

    return rx.sub(expand, s)


def _loop(*args: Any) -> list[int]:
    """``loop 5`` -> 0..4, ``loop 2 5`` -> 2..4, ``loop 5 1`` -> 5..2 (ContainerPilot)."""
    if not 1 <= len(args) <= 2:
        raise ExecError(f"loop: wrong number of args: want 1 or 2, got {len(args)}")
    nums = [_want_int("loop", a) for a in args]
    start, stop = (0, nums[0]) if len(nums) == 1 else (nums[0], nums[1])
    step = 1 if stop >= start else -1
    if abs(stop - start) > MAX_LOOP:
        raise ExecError(f"loop: more than {MAX_LOOP} items")
    return list(range(start, stop, step))


def _not(v: Any) -> bool:
    return not truth(v)


def builtin_funcs(environ: Mapping[str, str]) -> dict[str, tuple[Callable[..., Any], int, int]]:
    """name -> (function, min args, max args or -1)."""
    return {
        "eq": (_eq, 1, -1),
        "ne": (lambda a, b: not _eq(a, b), 2, 2),
        "lt": (lambda a, b: _order("lt", a, b) < 0, 2, 2),
        "le": (lambda a, b: _order("le", a, b) <= 0, 2, 2),
        "gt": (lambda a, b: _order("gt", a, b) > 0, 2, 2),
        "ge": (lambda a, b: _order("ge", a, b) >= 0, 2, 2),
        "not": (_not, 1, 1),
        "len": (_length, 1, 1),
        "index": (_index, 1, -1),
        "slice": (_slice, 1, -1),
        "print": (_sprint, 0, -1),
        "println": (lambda *a: " ".join(go_format(x) for x in a) + "\n", 0, -1),
        "printf": (lambda f, *a: go_sprintf(_want_str("printf", f), *a), 1, -1),
        "html": (lambda *a: _html_escape(_sprint(*a)), 0, -1),
        "js": (lambda *a: _js_escape(_sprint(*a)), 0, -1),
        "urlquery": (lambda *a: urllib.parse.quote_plus(_sprint(*a), safe=""), 0, -1),
        # ContainerPilot's functions
        "default": (_default, 1, 2),
        "env": (lambda name: environ.get(_want_str("env", name), ""), 1, 1),
        "split": (_split, 2, 2),
        "join": (_join, 2, 2),
        "replaceAll": (_replace_all, 3, 3),
        "regexReplaceAll": (_regex_replace_all, 3, 3),
        "loop": (_loop, 1, 2),
    }

"""A small Go ``text/template`` engine, enough to render ContainerPilot configs.

ContainerPilot renders its config file as a Go template over the environment before
parsing it; existing configs rely on that syntax, so autopilot speaks the same dialect
rather than Jinja2: actions ``{{ pipeline }}``, trim markers ``{{- -}}``, comments,
``if/else if/else``, ``range`` (lists, maps, integers; ``$i, $v :=``; ``break``/
``continue``), ``with``/``else with``, variables, parenthesised pipelines,
``define``/``template``/``block``, Go's built-in functions and ContainerPilot's extra
ones (``default env split join replaceAll regexReplaceAll loop``). Missing map keys
render as the empty string (Go's ``missingkey=zero`` on a ``map[string]string``).

Values are plain Python objects: str, int, float, bool, None, list, dict.
"""

from __future__ import annotations

import bisect
import html
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = ["TemplateError", "render", "render_mapped", "SourceMap", "Template", "go_format"]

MAX_LOOP = 100_000  # `loop` refuses to build bigger lists (a typo must not eat the memory)
MAX_DEPTH = 100  # nested {{template}} calls
MAX_OUTPUT = 16 << 20  # bytes of rendered text: a runaway range must fail, not fill memory
MAX_STEPS = 1_000_000  # nodes executed: nested loops that print nothing must end too


class TemplateError(Exception):
    """A template that cannot be parsed or executed; ``line``/``column`` are 1-based."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(f"{line}:{column}: {message}" if line else message)
        self.message = message
        self.line = line
        self.column = column


class _ExecError(Exception):
    """Raised inside execution; turned into TemplateError with the node's position."""


# ----------------------------------------------------------------------------------------
# Go value formatting


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


# ----------------------------------------------------------------------------------------
# printf

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
# Lexing


@dataclass
class _Tok:
    kind: str  # str num bool nil dot field var ident kw pipe ( ) := = , eof char
    value: Any
    pos: int
    space_before: bool = False


_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break",
             "continue"}
_NUM = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|"
    r"(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?)"
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GO_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
           "\\": "\\", "'": "'", '"': '"'}


def _unquote(body: str, quote: str, pos: int) -> str:
    """Decode a Go interpreted string literal's body."""
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        i += 1
        if i >= len(body):
            raise TemplateError("unterminated quoted string", 0, pos)
        esc = body[i]
        if esc in _GO_ESC:
            if (esc == "'" and quote == '"') or (esc == '"' and quote == "'"):
                raise TemplateError(f"invalid escape \\{esc} in quoted string", 0, pos)
            out.append(_GO_ESC[esc])
            i += 1
        elif esc in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i + 1:i + 1 + n]
            if len(digits) != n or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise TemplateError(f"invalid escape \\{esc} in quoted string", 0, pos)
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise TemplateError(f"invalid escape \\{esc}{digits} in quoted string", 0, pos)
            out.append(chr(code))
            i += 1 + n
        elif esc in "01234567":
            digits = body[i:i + 3]
            if not re.fullmatch(r"[0-7]{3}", digits):
                raise TemplateError("invalid octal escape in quoted string", 0, pos)
            out.append(chr(int(digits, 8)))
            i += 3
        else:
            raise TemplateError(f"invalid escape \\{esc} in quoted string", 0, pos)
    return "".join(out)


def _lex_action(src: str, start: int, end: int) -> list[_Tok]:
    """Tokens of the action text src[start:end]; positions are absolute offsets."""
    toks: list[_Tok] = []
    i = start
    space = True
    while i < end:
        ch = src[i]
        if ch in " \t\r\n":
            i += 1
            space = True
            continue
        tok_start = i
        if ch == '"':
            j = i + 1
            while j < end and src[j] != '"':
                if src[j] == "\\":
                    j += 1
                elif src[j] == "\n":
                    raise TemplateError("unterminated quoted string", 0, i)
                j += 1
            if j >= end:
                raise TemplateError("unterminated quoted string", 0, i)
            toks.append(_Tok("str", _unquote(src[i + 1:j], '"', i), i, space))
            i = j + 1
        elif ch == "`":
            j = src.find("`", i + 1, end)
            if j < 0:
                raise TemplateError("unterminated raw quoted string", 0, i)
            toks.append(_Tok("str", src[i + 1:j].replace("\r", ""), i, space))
            i = j + 1
        elif ch == "'":
            j = i + 1
            while j < end and src[j] != "'":
                if src[j] == "\\":
                    j += 1
                j += 1
            if j >= end:
                raise TemplateError("unterminated character constant", 0, i)
            text = _unquote(src[i + 1:j], "'", i)
            if len(text) != 1:
                raise TemplateError(f"malformed character constant: {src[i:j + 1]}", 0, i)
            toks.append(_Tok("num", ord(text), i, space))
            i = j + 1
        elif ch == "|":
            toks.append(_Tok("pipe", "|", i, space))
            i += 1
        elif ch in "(),":
            toks.append(_Tok(ch, ch, i, space))
            i += 1
        elif src.startswith(":=", i):
            toks.append(_Tok(":=", ":=", i, space))
            i += 2
        elif ch == "=":
            toks.append(_Tok("=", "=", i, space))
            i += 1
        elif ch == "$":
            m = _IDENT.match(src, i + 1, end)
            name = "$" + (m.group(0) if m else "")
            toks.append(_Tok("var", name, i, space))
            i += len(name)
        elif ch == "." and not (i + 1 < end and src[i + 1].isdigit()):
            m = _IDENT.match(src, i + 1, end)
            if m:
                toks.append(_Tok("field", m.group(0), i, space))
                i = m.end()
            else:
                toks.append(_Tok("dot", ".", i, space))
                i += 1
        elif ch.isdigit() or (ch in "+-." and i + 1 < end and
                              (src[i + 1].isdigit() or src[i + 1] == ".")):
            m = _NUM.match(src, i, end)
            if not m or (m.end() < end and (src[m.end()].isalnum() or src[m.end()] == "_")):
                raise TemplateError(f"bad number syntax: {src[i:end].split()[0]!r}", 0, i)
            text = m.group(0).replace("_", "")
            body = text.lstrip("+-")
            if re.fullmatch(r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+", body):
                value: int | float = int(text, 0)
            elif re.fullmatch(r"[+-]?\d+", text):
                value = int(text, 8) if len(body) > 1 and body[0] == "0" else int(text)
            else:
                value = float(text)
            toks.append(_Tok("num", value, i, space))
            i = m.end()
        elif ch.isalpha() or ch == "_":
            m = _IDENT.match(src, i, end)
            assert m
            word = m.group(0)
            if word in ("true", "false"):
                toks.append(_Tok("bool", word == "true", i, space))
            elif word == "nil":
                toks.append(_Tok("nil", None, i, space))
            elif word in _KEYWORDS:
                toks.append(_Tok("kw", word, i, space))
            else:
                toks.append(_Tok("ident", word, i, space))
            i = m.end()
        else:
            raise TemplateError(f"unexpected {ch!r} in command", 0, i)
        space = False
        assert i > tok_start
    toks.append(_Tok("eof", None, end, True))
    return toks


# ----------------------------------------------------------------------------------------
# AST


@dataclass
class _Node:
    pos: int


@dataclass
class _Text(_Node):
    text: str


@dataclass
class _Operand(_Node):
    kind: str  # literal dot field var ident pipe
    value: Any = None  # literal value / var name / func name / nested pipeline
    chain: list[str] = field(default_factory=list)  # .A.B after the term


@dataclass
class _Command(_Node):
    args: list[_Operand]


@dataclass
class _Pipeline(_Node):
    decl: list[str]
    assign: bool  # `=` instead of `:=`
    cmds: list[_Command]


@dataclass
class _Action(_Node):
    pipe: _Pipeline


@dataclass
class _Branch(_Node):
    kind: str  # if with range
    pipe: _Pipeline
    body: list[_Node]
    orelse: list[_Node] | None


@dataclass
class _Jump(_Node):
    kind: str  # break continue


@dataclass
class _Call(_Node):
    name: str
    pipe: _Pipeline | None


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


# ----------------------------------------------------------------------------------------
# Parsing


def _segments(src: str) -> list[tuple[str, int, int]]:
    """Split into ("text", start, end) and ("action", start, end) of the inside of
    ``{{ }}``, applying trim markers and dropping comments."""
    out: list[tuple[str, int, int]] = []
    pos = 0
    n = len(src)
    trim_next = False
    while True:
        i = src.find("{{", pos)
        if i < 0:
            if trim_next:
                while pos < n and src[pos] in " \t\r\n":
                    pos += 1
            out.append(("text", pos, n))
            return out
        text_start, text_end = pos, i
        if trim_next:
            while text_start < text_end and src[text_start] in " \t\r\n":
                text_start += 1
        inner = i + 2
        if src.startswith("-", inner) and inner + 1 < n and src[inner + 1] in " \t\r\n":
            while text_end > text_start and src[text_end - 1] in " \t\r\n":
                text_end -= 1
            inner += 2
        out.append(("text", text_start, text_end))
        # find the closing delimiter, skipping quoted text
        j = inner
        while j < n and src[j] in " \t\r\n":
            j += 1
        if src.startswith("/*", j):
            k = src.find("*/", j + 2)
            if k < 0:
                raise TemplateError("unclosed comment", 0, i)
            k += 2
            m = re.compile(r"\s+-\}\}|\}\}").match(src, k)
            if not m:
                raise TemplateError("comment ends before closing delimiter", 0, i)
            trim_next = m.group(0) != "}}"
            pos = m.end()
            continue
        quote = ""
        quote_at = 0
        while True:
            if j >= n:
                if quote:
                    raise TemplateError("unterminated quoted string", 0, quote_at)
                raise TemplateError("unclosed action", 0, i)
            ch = src[j]
            if quote:
                if ch == "\\" and quote != "`":
                    j += 2
                    continue
                if ch == quote:
                    quote = ""
                j += 1
                continue
            if ch in "\"'`":
                quote, quote_at = ch, j
                j += 1
                continue
            if src.startswith("}}", j):
                close_start, trim_next = j, False
                if j >= 2 and src[j - 1] == "-" and src[j - 2] in " \t\r\n" and j - 1 > inner:
                    close_start, trim_next = j - 1, True
                out.append(("action", inner, close_start))
                pos = j + 2
                break
            j += 1


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.segs = _segments(src)
        self.k = 0
        self.defines: dict[str, list[_Node]] = {}
        self.range_depth = 0

    def parse(self) -> list[_Node]:
        nodes, term = self.list()
        if term is not None:
            raise TemplateError(f"unexpected {{{{{term[0].value}}}}}", 0, term[0].pos)
        return nodes

    def list(self) -> tuple[list[_Node], tuple[_Tok, list[_Tok]] | None]:
        """Nodes up to an {{else}}/{{end}} (returned as the terminator) or the end."""
        nodes: list[_Node] = []
        while self.k < len(self.segs):
            kind, a, b = self.segs[self.k]
            self.k += 1
            if kind == "text":
                if b > a:
                    nodes.append(_Text(a, self.src[a:b]))
                continue
            toks = _lex_action(self.src, a, b)
            first = toks[0]
            if first.kind == "eof":
                raise TemplateError("missing value for command", 0, first.pos)
            if first.kind == "kw":
                word = first.value
                if word in ("else", "end"):
                    return nodes, (first, toks[1:])
                node = self.control(word, first, toks[1:])
                if node is not None:
                    nodes.append(node)
                continue
            nodes.append(_Action(first.pos, self.pipeline(toks, 0, allow_decl=True)[0]))
        return nodes, None

    def control(self, word: str, first: _Tok, rest: list[_Tok]) -> _Node | None:
        if word in ("if", "with", "range"):
            return self.branch(word, first, rest)
        if word in ("break", "continue"):
            if self.range_depth == 0:
                raise TemplateError(f"{{{{{word}}}}} outside {{{{range}}}}", 0, first.pos)
            if rest[0].kind != "eof":
                raise TemplateError(f"unexpected {rest[0].value!r} in {word}", 0, rest[0].pos)
            return _Jump(first.pos, word)
        if word in ("define", "block"):
            if rest[0].kind != "str":
                raise TemplateError(f"{word}: expected a quoted template name", 0, first.pos)
            name = rest[0].value
            pipe = None
            if word == "block":
                pipe = self.pipeline(rest, 1, allow_decl=False)[0] if rest[1].kind != "eof" \
                    else None
            elif rest[1].kind != "eof":
                raise TemplateError("define: unexpected arguments", 0, rest[1].pos)
            body, term = self.list()
            if term is None or term[0].value != "end":
                raise TemplateError(f"unexpected EOF in {word}", 0, first.pos)
            self.defines[name] = body
            return _Call(first.pos, name, pipe) if word == "block" else None
        if word == "template":
            if rest[0].kind != "str":
                raise TemplateError("template: expected a quoted template name", 0, first.pos)
            pipe = self.pipeline(rest, 1, allow_decl=False)[0] if rest[1].kind != "eof" \
                else None
            return _Call(first.pos, rest[0].value, pipe)
        raise TemplateError(f"unexpected {{{{{word}}}}}", 0, first.pos)

    def branch(self, word: str, first: _Tok, rest: list[_Tok]) -> _Branch:
        if rest[0].kind == "eof":
            raise TemplateError(f"missing value for {word}", 0, first.pos)
        pipe = self.pipeline(rest, 0, allow_decl=True, range_decl=word == "range")[0]
        if word == "range":
            self.range_depth += 1
        try:
            body, term = self.list()
        finally:
            if word == "range":
                self.range_depth -= 1
        if term is None:
            raise TemplateError(f"unexpected EOF: {{{{{word}}}}} without {{{{end}}}}", 0,
                                first.pos)
        tok, after = term
        orelse = None
        if tok.value == "else":
            if after[0].kind == "kw" and after[0].value in ("if", "with") and \
                    word in ("if", "with") and after[0].value == word:
                # {{else if x}} / {{else with x}}: a nested branch sharing our {{end}}
                orelse = [self.branch(word, after[0], after[1:])]
            else:
                if after[0].kind != "eof":
                    raise TemplateError("unexpected tokens after else", 0, after[0].pos)
                orelse, term = self.list()
                if term is None or term[0].value != "end":
                    raise TemplateError(f"expected {{{{end}}}} for {{{{{word}}}}}", 0,
                                        first.pos)
                if term[1][0].kind != "eof":
                    raise TemplateError("unexpected tokens after end", 0, term[1][0].pos)
        elif after[0].kind != "eof":
            raise TemplateError("unexpected tokens after end", 0, after[0].pos)
        return _Branch(first.pos, word, pipe, body, orelse)

    def pipeline(self, toks: list[_Tok], i: int, allow_decl: bool,
                 range_decl: bool = False, until: str = "eof") -> tuple[_Pipeline, int]:
        start = toks[i].pos
        decl: list[str] = []
        assign = False
        if allow_decl and toks[i].kind == "var":
            if toks[i + 1].kind in (":=", "="):
                decl = [toks[i].value]
                assign = toks[i + 1].kind == "="
                i += 2
            elif range_decl and toks[i + 1].kind == "," and toks[i + 2].kind == "var" \
                    and toks[i + 3].kind in (":=", "="):
                decl = [toks[i].value, toks[i + 2].value]
                assign = toks[i + 3].kind == "="
                i += 4
        cmds: list[_Command] = []
        while True:
            cmd, i = self.command(toks, i)
            cmds.append(cmd)
            if toks[i].kind == "pipe":
                i += 1
                continue
            break
        if toks[i].kind != until:
            t = toks[i]
            raise TemplateError(f"unexpected {t.value!r} in operand" if t.kind != "eof"
                                else "unexpected end of action", 0, t.pos)
        return _Pipeline(start, decl, assign, cmds), i

    def command(self, toks: list[_Tok], i: int) -> tuple[_Command, int]:
        start = toks[i].pos
        args: list[_Operand] = []
        while toks[i].kind not in ("pipe", ")", "eof"):
            if args and not toks[i].space_before and toks[i].kind not in ("(",):
                raise TemplateError(f"missing space before {toks[i].value!r}", 0, toks[i].pos)
            op, i = self.operand(toks, i)
            args.append(op)
        if not args:
            raise TemplateError("missing value for command", 0, toks[i].pos)
        return _Command(start, args), i

    def operand(self, toks: list[_Tok], i: int) -> tuple[_Operand, int]:
        t = toks[i]
        if t.kind in ("str", "num", "bool", "nil"):
            op = _Operand(t.pos, "literal" if t.kind != "nil" else "nil", t.value)
            i += 1
        elif t.kind == "dot":
            op = _Operand(t.pos, "dot")
            i += 1
        elif t.kind == "field":
            op = _Operand(t.pos, "field", None, [t.value])
            i += 1
        elif t.kind == "var":
            op = _Operand(t.pos, "var", t.value)
            i += 1
        elif t.kind == "ident":
            op = _Operand(t.pos, "ident", t.value)
            i += 1
        elif t.kind == "(":
            pipe, i = self.pipeline(toks, i + 1, allow_decl=True, until=")")
            op = _Operand(t.pos, "pipe", pipe)
            i += 1
        else:
            raise TemplateError(f"unexpected {t.value!r} in operand", 0, t.pos)
        while toks[i].kind == "field" and not toks[i].space_before:
            if op.kind in ("literal", "nil", "ident"):
                raise TemplateError(f"unexpected .{toks[i].value} after {op.kind}", 0,
                                    toks[i].pos)
            op.chain.append(toks[i].value)
            i += 1
        return op, i


# ----------------------------------------------------------------------------------------
# Functions

_NOARG = object()


def _want_str(name: str, v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is None or isinstance(v, list | tuple | Mapping):
        raise _ExecError(f"{name}: expected a string, got {go_type(v)}")
    return go_format(v)


def _want_int(name: str, v: Any) -> int:
    if isinstance(v, bool):
        raise _ExecError(f"{name}: expected an integer, got bool")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            raise _ExecError(f"{name}: cannot convert {go_quote(v)} to an integer") from None
    raise _ExecError(f"{name}: expected an integer, got {go_type(v)}")


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
        raise _ExecError("eq: missing argument for comparison")
    for b in others:
        ka, kb = _kind(a), _kind(b)
        if "other" in (ka, kb):
            if a == b:
                return True
            raise _ExecError(f"eq: invalid type for comparison: {go_type(a)}, {go_type(b)}")
        if ka != kb and "nil" not in (ka, kb):
            raise _ExecError(f"eq: incompatible types for comparison: {go_type(a)} and "
                             f"{go_type(b)}")
        if a == b:
            return True
    return False


def _order(name: str, a: Any, b: Any) -> int:
    ka, kb = _kind(a), _kind(b)
    if ka in ("bool", "nil", "other") or kb in ("bool", "nil", "other"):
        raise _ExecError(f"{name}: invalid type for comparison: {go_type(a)}, {go_type(b)}")
    if ka != kb:
        raise _ExecError(f"{name}: incompatible types for comparison: {go_type(a)} and "
                         f"{go_type(b)}")
    return (a > b) - (a < b)


def _index(item: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(item, Mapping):
            if not isinstance(k, str):
                raise _ExecError(f"index: map key must be a string, got {go_type(k)}")
            item = item.get(k, "")
        elif isinstance(item, list | tuple | str):
            if not isinstance(k, int) or isinstance(k, bool):
                raise _ExecError(f"index: cannot index with {go_type(k)}")
            if not 0 <= k < len(item):
                raise _ExecError(f"index: index out of range: {k}")
            item = item[k] if not isinstance(item, str) else item.encode()[k]
        elif item is None:
            raise _ExecError("index: index of untyped nil")
        else:
            raise _ExecError(f"index: can't index item of type {go_type(item)}")
    return item


def _slice(item: Any, *idx: Any) -> Any:
    if not isinstance(item, list | tuple | str):
        raise _ExecError(f"slice: can't slice item of type {go_type(item)}")
    if len(idx) > 3 or (len(idx) == 3 and isinstance(item, str)):
        raise _ExecError("slice: too many slice indexes")
    bounds = [_want_int("slice", x) for x in idx]
    lo = bounds[0] if bounds else 0
    hi = bounds[1] if len(bounds) > 1 else len(item)
    if not 0 <= lo <= hi <= len(item):
        raise _ExecError(f"slice: index out of range: {lo}:{hi}")
    return item[lo:hi]


def _length(v: Any) -> int:
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, list | tuple | Mapping):
        return len(v)
    raise _ExecError(f"len: len of type {go_type(v)}")


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


def _default(default: Any, value: Any = _NOARG) -> str:
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
        raise _ExecError(f"join: expected a list, got {go_type(items)}")
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
        raise _ExecError(f"regexReplaceAll: invalid regexp {go_quote(pattern)}: {exc}") \
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
        raise _ExecError(f"loop: wrong number of args: want 1 or 2, got {len(args)}")
    nums = [_want_int("loop", a) for a in args]
    start, stop = (0, nums[0]) if len(nums) == 1 else (nums[0], nums[1])
    step = 1 if stop >= start else -1
    if abs(stop - start) > MAX_LOOP:
        raise _ExecError(f"loop: more than {MAX_LOOP} items")
    return list(range(start, stop, step))


def _not(v: Any) -> bool:
    return not truth(v)


def _builtins(environ: Mapping[str, str]) -> dict[str, tuple[Callable[..., Any], int, int]]:
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


# ----------------------------------------------------------------------------------------
# Execution


class Template:
    """A parsed template; ``execute(data)`` renders it."""

    def __init__(self, src: str, name: str = "template",
                 environ: Mapping[str, str] | None = None) -> None:
        self.src = src
        self.name = name
        self.funcs = _builtins(environ if environ is not None else {})
        try:
            parser = _Parser(src)
            self.nodes = parser.parse()
        except TemplateError as exc:
            raise self._at(exc.message, exc.column) from None
        self.defines = parser.defines

    def _at(self, message: str, offset: int) -> TemplateError:
        line = self.src.count("\n", 0, offset) + 1
        col = offset - (self.src.rfind("\n", 0, offset) + 1) + 1
        return TemplateError(message, line, col)

    def execute(self, data: Any) -> str:
        return self.execute_mapped(data)[0]

    def execute_mapped(self, data: Any) -> tuple[str, SourceMap]:
        """The output, and where each part of it came from in the template source."""
        out: list[str] = []
        state = _State(self, data, out)
        state.run(self.nodes, data)
        return "".join(out), SourceMap(state.chunks)


class SourceMap:
    """Maps an offset in the rendered text back to the template source: text copied from
    the template maps character for character, an action's output maps to the action."""

    def __init__(self, chunks: list[tuple[int, int, bool]]) -> None:
        # (offset in the output, offset in the source, copied verbatim?)
        self.chunks = chunks
        self.starts = [c[0] for c in chunks]

    def source_offset(self, out_offset: int) -> int:
        i = bisect.bisect_right(self.starts, out_offset) - 1
        if i < 0:
            return out_offset
        out_start, src_start, verbatim = self.chunks[i]
        return src_start + (out_offset - out_start) if verbatim else src_start


class _State:
    def __init__(self, tpl: Template, data: Any, out: list[str]) -> None:
        self.tpl = tpl
        self.out = out
        self.vars: list[tuple[str, Any]] = [("$", data)]
        self.depth = 0
        self.size = 0
        self.steps = 0
        self.chunks: list[tuple[int, int, bool]] = []

    def fail(self, node: _Node, message: str) -> TemplateError:
        return self.tpl._at(message, node.pos)

    def emit(self, node: _Node, text: str) -> None:
        if not text:
            return
        self.chunks.append((self.size, node.pos, isinstance(node, _Text)))
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            raise self.fail(node, f"rendered text exceeds {MAX_OUTPUT >> 20} MiB")
        self.out.append(text)

    def run(self, nodes: list[_Node], dot: Any) -> None:
        for node in nodes:
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise self.fail(node, f"template runs more than {MAX_STEPS} steps")
            if isinstance(node, _Text):
                self.emit(node, node.text)
            elif isinstance(node, _Action):
                value = self.pipeline(node.pipe, dot)
                if not node.pipe.decl:
                    self.emit(node, "<no value>" if value is None else go_format(value))
            elif isinstance(node, _Branch):
                self.branch(node, dot)
            elif isinstance(node, _Jump):
                raise _Break() if node.kind == "break" else _Continue()
            elif isinstance(node, _Call):
                self.call_template(node, dot)

    def call_template(self, node: _Call, dot: Any) -> None:
        body = self.tpl.defines.get(node.name)
        if body is None:
            raise self.fail(node, f"no such template {go_quote(node.name)}")
        if self.depth >= MAX_DEPTH:
            raise self.fail(node, f"exceeded maximum template depth ({MAX_DEPTH})")
        new_dot = self.pipeline(node.pipe, dot) if node.pipe else None
        saved = self.vars
        self.vars = [("$", new_dot)]
        self.depth += 1
        try:
            self.run(body, new_dot)
        finally:
            self.depth -= 1
            self.vars = saved

    def branch(self, node: _Branch, dot: Any) -> None:
        mark = len(self.vars)
        try:
            if node.kind == "range":
                self.range(node, dot)
                return
            value = self.pipeline(node.pipe, dot)
            if truth(value):
                self.run(node.body, value if node.kind == "with" else dot)
            elif node.orelse is not None:
                self.run(node.orelse, dot)
        finally:
            del self.vars[mark:]

    def range(self, node: _Branch, dot: Any) -> None:
        pipe = node.pipe
        value = self.pipeline(_Pipeline(pipe.pos, [], False, pipe.cmds), dot)
        if isinstance(value, Mapping):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            if len(pipe.decl) > 1:
                raise self.fail(node, "can't use two variables when ranging over an integer")
            items = [(i, i) for i in range(value)]
        elif value is None or value == "":  # "" is what a missing environment key gives
            items = []
        else:
            raise self.fail(node, f"range can't iterate over {go_format(value)}")
        if not items:
            if node.orelse is not None:
                self.run(node.orelse, dot)
            return
        mark = len(self.vars)
        for key, elem in items:
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise self.fail(node, f"template runs more than {MAX_STEPS} steps")
            if len(pipe.decl) == 1:
                self.setvar(node, pipe.decl[0], elem, pipe.assign)
            elif len(pipe.decl) == 2:
                self.setvar(node, pipe.decl[0], key, pipe.assign)
                self.setvar(node, pipe.decl[1], elem, pipe.assign)
            try:
                self.run(node.body, elem)
            except _Break:
                break
            except _Continue:
                continue
            finally:
                del self.vars[mark:]

    def setvar(self, node: _Node, name: str, value: Any, assign: bool) -> None:
        if not assign:
            self.vars.append((name, value))
            return
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise self.fail(node, f"undefined variable: {name}")

    def getvar(self, node: _Node, name: str) -> Any:
        for n, v in reversed(self.vars):
            if n == name:
                return v
        raise self.fail(node, f"undefined variable: {name}")

    def pipeline(self, pipe: _Pipeline, dot: Any) -> Any:
        value: Any = _NOARG
        for cmd in pipe.cmds:
            value = self.command(cmd, dot, value)
        for name in pipe.decl:
            self.setvar(pipe, name, value, pipe.assign)
        return value

    def command(self, cmd: _Command, dot: Any, final: Any) -> Any:
        first = cmd.args[0]
        if first.kind == "ident" and not first.chain:
            return self.call(first, cmd.args[1:], dot, final)
        if len(cmd.args) > 1 or final is not _NOARG:
            what = first.chain[-1] if first.chain else go_format(first.value)
            raise self.fail(first, f"can't give argument to non-function {what}")
        if first.kind == "nil":
            raise self.fail(first, "nil is not a command")
        return self.operand(first, dot)

    def operand(self, op: _Operand, dot: Any) -> Any:
        if op.kind == "literal":
            value = op.value
        elif op.kind == "nil":
            value = None
        elif op.kind == "dot":
            value = dot
        elif op.kind == "field":
            value = dot
        elif op.kind == "var":
            value = self.getvar(op, op.value)
        elif op.kind == "pipe":
            value = self.pipeline(op.value, dot)
        elif op.kind == "ident":
            value = self.call(op, [], dot, _NOARG)
        else:  # pragma: no cover - the parser makes no other kinds
            raise self.fail(op, f"bad operand {op.kind}")
        for name in op.chain:
            if isinstance(value, Mapping):
                value = value.get(name, "")  # missingkey=zero on map[string]string
            else:
                raise self.fail(op, f"can't evaluate field {name} in type {go_type(value)}")
        return value

    def call(self, op: _Operand, args: list[_Operand], dot: Any, final: Any) -> Any:
        name = op.value
        if name in ("and", "or"):
            ops: list[Any] = list(args)
            if final is not _NOARG:
                ops.append(("value", final))
            if not ops:
                raise self.fail(op, f"wrong number of args for {name}: want at least 1 got 0")
            value: Any = None
            for a in ops:
                value = a[1] if isinstance(a, tuple) else self.operand(a, dot)
                if truth(value) != (name == "and"):
                    return value
            return value
        spec = self.tpl.funcs.get(name)
        if spec is None:
            raise self.fail(op, f'function "{name}" not defined')
        fn, lo, hi = spec
        values = [self.operand(a, dot) for a in args]
        if final is not _NOARG:
            values.append(final)
        if len(values) < lo or (hi >= 0 and len(values) > hi):
            want = str(lo) if lo == hi else f"at least {lo}" if hi < 0 else f"{lo} to {hi}"
            raise self.fail(op, f"wrong number of args for {name}: want {want} got "
                                f"{len(values)}")
        try:
            return fn(*values)
        except _ExecError as exc:
            raise self.fail(op, f"error calling {name}: {exc}") from None
        except (ValueError, OverflowError, TypeError, RecursionError) as exc:
            raise self.fail(op, f"error calling {name}: {exc}") from None


def render(src: str, environ: Mapping[str, str], name: str = "template") -> str:
    """Render ``src`` with the environment as data (``{{ .HOME }}``) and for ``env``."""
    return render_mapped(src, environ, name)[0]


def render_mapped(src: str, environ: Mapping[str, str],
                  name: str = "template") -> tuple[str, SourceMap]:
    """``render``, plus the map from rendered offsets back to ``src`` offsets."""
    data = dict(environ)
    try:
        return Template(src, name, environ=data).execute_mapped(data)
    except RecursionError:
        raise TemplateError("template nested too deeply", 1, 1) from None

"""A small JSON5 parser that remembers where every value came from.

The ``json5`` package parses fine, but it cannot tell the validator on which line
``jobs[2].health.interval`` was written. This parser returns plain Python values plus a
table ``path -> (line, column)``, so a validation error can point at the line, and its
syntax errors always carry line and column.

Grammar: https://spec.json5.org (comments, unquoted keys, single quotes, trailing commas,
hex numbers, ``Infinity``/``NaN``, leading/trailing decimal points, explicit ``+``,
multi-line strings with a backslash before the newline).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from typing import Any

Path = tuple[str | int, ...]
MAX_NESTING = 100  # objects/arrays; far beyond any config, well within Python's stack

_WS = "\t\n\v\f\r \u00a0\u2028\u2029\ufeff"
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "'": "'", '"': '"', "\\": "\\", "/": "/"}


class JSON5Error(ValueError):
    """A syntax error; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass
class Parsed:
    """A parsed JSON5 document."""

    value: Any
    #: path -> (line, column) of the key (object members) or the value (array items)
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    #: "line:col: duplicate key" notes; JSON5 allows them (the last one wins)
    duplicates: list[tuple[Path, int, int]] = field(default_factory=list)
    #: (line, column) of line breaks accepted in place of a missing comma
    missing_commas: list[tuple[int, int]] = field(default_factory=list)


def _is_id_start(ch: str) -> bool:
    return ch in "$_" or unicodedata.category(ch).startswith("L") or \
        unicodedata.category(ch) == "Nl"


def _is_id_part(ch: str) -> bool:
    return _is_id_start(ch) or unicodedata.category(ch) in ("Mn", "Mc", "Nd", "Pc") \
        or ch in "\u200c\u200d"


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.n = len(text)
        self.out = Parsed(None)

    # -- positions ---------------------------------------------------------------
    def where(self, i: int | None = None) -> tuple[int, int]:
        i = self.i if i is None else i
        line = self.s.count("\n", 0, i) + 1
        col = i - (self.s.rfind("\n", 0, i) + 1) + 1
        return line, col

    def fail(self, message: str, i: int | None = None) -> JSON5Error:
        line, col = self.where(i)
        return JSON5Error(message, line, col)

    def unexpected(self) -> JSON5Error:
        if self.i >= self.n:
            return self.fail("unexpected end of input")
        import json  # only for this message: a valid config never loads it (0.2 MB)

        return self.fail(f"unexpected {json.dumps(self.s[self.i], ensure_ascii=False)}")

    # -- lexical -----------------------------------------------------------------
    def skip(self) -> None:
        s, n = self.s, self.n
        while self.i < n:
            ch = s[self.i]
            if ch in _WS or unicodedata.category(ch) == "Zs":
                self.i += 1
            elif s.startswith("//", self.i):
                j = self.i
                while j < n and s[j] not in "\n\r\u2028\u2029":
                    j += 1
                self.i = j
            elif s.startswith("/*", self.i):
                j = s.find("*/", self.i + 2)
                if j < 0:
                    raise self.fail("unterminated comment")
                self.i = j + 2
            else:
                return

    def peek(self) -> str:
        return self.s[self.i] if self.i < self.n else ""

    # -- grammar -----------------------------------------------------------------
    def parse(self) -> Parsed:
        self.skip()
        self.out.positions[()] = self.where()
        self.out.value = self.value(())
        self.skip()
        if self.i < self.n:
            raise self.unexpected()
        return self.out

    def value(self, path: Path) -> Any:
        self.skip()
        ch = self.peek()
        if ch == "{":
            return self.obj(path)
        if ch == "[":
            return self.arr(path)
        if ch and ch in "\"'":
            return self.string()
        if ch and (ch.isdigit() or ch in "+-.") or self.s.startswith(("Infinity", "NaN"), self.i):
            return self.number()
        for word, val in (("true", True), ("false", False), ("null", None)):
            if self.s.startswith(word, self.i):
                end = self.i + len(word)
                if end >= self.n or not _is_id_part(self.s[end]):
                    self.i = end
                    return val
        raise self.unexpected()

    def nest(self, path: Path) -> None:
        if len(path) >= MAX_NESTING:
            raise self.fail(f"nested deeper than {MAX_NESTING} levels")

    def obj(self, path: Path) -> dict[str, Any]:
        self.nest(path)
        self.i += 1
        result: dict[str, Any] = {}
        while True:
            self.skip()
            if self.peek() == "}":
                self.i += 1
                return result
            start = self.i
            key = self.key()
            line, col = self.where(start)
            self.skip()
            if self.peek() != ":":
                raise self.fail(f'expected ":" after key "{key}"' if self.i < self.n
                                else "unexpected end of input")
            self.i += 1
            sub = (*path, key)
            if key in result:
                self.out.duplicates.append((sub, line, col))
            self.out.positions[sub] = (line, col)
            result[key] = self.value(sub)
            end = self.i
            self.skip()
            ch = self.peek()
            if ch == ",":
                self.i += 1
            elif self.newline_as_comma(end, ch):
                continue
            elif ch == "}":
                self.i += 1
                return result
            elif not ch:
                raise self.fail("unexpected end of input: missing \"}\"")
            else:
                raise self.fail(f'expected "," or "}}" but found "{ch}"')

    def arr(self, path: Path) -> list[Any]:
        self.nest(path)
        self.i += 1
        result: list[Any] = []
        while True:
            self.skip()
            if self.peek() == "]":
                self.i += 1
                return result
            sub = (*path, len(result))
            self.out.positions[sub] = self.where()
            result.append(self.value(sub))
            end = self.i
            self.skip()
            ch = self.peek()
            if ch == ",":
                self.i += 1
            elif self.newline_as_comma(end, ch, closer="]"):
                continue
            elif ch == "]":
                self.i += 1
                return result
            elif not ch:
                raise self.fail('unexpected end of input: missing "]"')
            else:
                raise self.fail(f'expected "," or "]" but found "{ch}"')

    def newline_as_comma(self, end: int, ch: str, closer: str = "}") -> bool:
        """Leniency: a line break stands in for a missing comma between two members.

        ContainerPilot's own documentation has examples written that way; they are
        accepted, and the spot is reported as a warning."""
        if not ch or ch == closer or ch in ",:]}" or "\n" not in self.s[end:self.i]:
            return False
        self.out.missing_commas.append(self.where(end))
        return True

    def key(self) -> str:
        ch = self.peek()
        if ch and ch in "\"'":
            return self.string()
        start = self.i
        chars: list[str] = []
        while self.i < self.n:
            c = self.s[self.i]
            if c == "\\":
                if not self.s.startswith("\\u", self.i):
                    raise self.fail("invalid escape in key")
                c = self.hex(self.i + 2, 4)
                self.i += 6
            elif (_is_id_part(c) if chars else _is_id_start(c)):
                self.i += 1
            else:
                break
            chars.append(c)
        if not chars:
            self.i = start
            if self.i >= self.n:
                raise self.fail("unexpected end of input")
            raise self.fail(f'invalid key: unexpected "{self.s[self.i]}"')
        return "".join(chars)

    def hex(self, i: int, count: int) -> str:
        digits = self.s[i:i + count]
        if len(digits) != count or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise self.fail("invalid escape sequence", i - 2)
        return chr(int(digits, 16))

    def string(self) -> str:
        quote = self.s[self.i]
        start = self.i
        self.i += 1
        out: list[str] = []
        s, n = self.s, self.n
        while True:
            if self.i >= n:
                raise self.fail("unterminated string", start)
            ch = s[self.i]
            if ch == quote:
                self.i += 1
                return "".join(out)
            if ch in "\n\r":
                raise self.fail("unterminated string (newline inside a string)", start)
            if ch != "\\":
                out.append(ch)
                self.i += 1
                continue
            self.i += 1
            if self.i >= n:
                raise self.fail("unterminated string", start)
            esc = s[self.i]
            if esc in _ESCAPES:
                out.append(_ESCAPES[esc])
                self.i += 1
            elif esc == "0" and not (self.i + 1 < n and s[self.i + 1].isdigit()):
                out.append("\0")
                self.i += 1
            elif esc == "x":
                out.append(self.hex(self.i + 1, 2))
                self.i += 3
            elif esc == "u":
                c = self.hex(self.i + 1, 4)
                self.i += 5
                if 0xD800 <= ord(c) <= 0xDBFF and s.startswith("\\u", self.i):
                    lo = self.hex(self.i + 2, 4)
                    if 0xDC00 <= ord(lo) <= 0xDFFF:
                        c = chr(0x10000 + ((ord(c) - 0xD800) << 10) + (ord(lo) - 0xDC00))
                        self.i += 6
                out.append(c)
            elif esc == "\r":
                self.i += 2 if s.startswith("\r\n", self.i) else 1
            elif esc in "\n\u2028\u2029":
                self.i += 1
            elif esc.isdigit():
                raise self.fail("invalid escape: octal escapes are not allowed", self.i - 1)
            else:
                out.append(esc)
                self.i += 1

    def number(self) -> int | float:
        start = self.i
        s = self.s
        sign = 1
        if s[self.i] in "+-":
            sign = -1 if s[self.i] == "-" else 1
            self.i += 1
        for word, val in (("Infinity", math.inf), ("NaN", math.nan)):
            if s.startswith(word, self.i):
                self.i += len(word)
                return sign * val
        if s.startswith(("0x", "0X"), self.i):
            j = self.i + 2
            while j < self.n and s[j] in "0123456789abcdefABCDEF":
                j += 1
            if j == self.i + 2:
                raise self.fail("invalid hexadecimal number", start)
            text = s[self.i + 2:j]
            self.i = j
            self.check_number_end(start)
            return sign * int(text, 16)
        j = self.i
        while j < self.n and s[j].isdigit():
            j += 1
        int_digits = j - self.i
        is_float = False
        if j < self.n and s[j] == ".":
            is_float = True
            j += 1
            k = j
            while j < self.n and s[j].isdigit():
                j += 1
            if int_digits == 0 and j == k:
                raise self.fail("invalid number", start)
        elif int_digits == 0:
            raise self.fail("invalid number", start)
        if int_digits > 1 and s[self.i] == "0":
            raise self.fail("invalid number: leading zero", start)
        if j < self.n and s[j] in "eE":
            is_float = True
            j += 1
            if j < self.n and s[j] in "+-":
                j += 1
            k = j
            while j < self.n and s[j].isdigit():
                j += 1
            if j == k:
                raise self.fail("invalid number: missing exponent", start)
        text = s[self.i:j]
        self.i = j
        self.check_number_end(start)
        return sign * (float(text) if is_float else int(text))

    def check_number_end(self, start: int) -> None:
        if self.i < self.n and _is_id_part(self.s[self.i]):
            raise self.fail("invalid number", start)


def parse(text: str) -> Parsed:
    """Parse JSON5 text; raises JSON5Error with line/column on a syntax error."""
    return _Parser(text).parse()

"""Go's ``encoding/json`` syntax-error texts for a body Python's parser refused.

Consul answers a malformed body with ``Request decode failed: <Go's error>``; clients and
scripts that match on it ("invalid character 'n' looking for beginning of object key
string") see the same words from the catalog. Only called after ``json.loads`` failed, so
its speed does not matter.
"""

from __future__ import annotations


class _Eof(Exception):
    pass


class _Bad(Exception):
    pass


def _quote(c: str) -> str:
    """Go's ``quoteChar``."""
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    if c.isprintable():
        return f"'{c}'"
    return "'" + c.encode("unicode_escape").decode() + "'"


class _Scan:
    def __init__(self, text: str) -> None:
        self.t, self.i = text, 0

    def peek(self) -> str:
        if self.i >= len(self.t):
            raise _Eof
        return self.t[self.i]

    def fail(self, context: str) -> None:
        raise _Bad(f"invalid character {_quote(self.peek())} {context}")

    def ws(self) -> None:
        while self.i < len(self.t) and self.t[self.i] in " \t\r\n":
            self.i += 1

    def value(self) -> None:
        self.ws()
        c = self.peek()
        if c == "{":
            self.obj()
        elif c == "[":
            self.arr()
        elif c == '"':
            self.string()
        elif c == "-" or c.isdigit():
            self.number()
        elif c in "tfn":
            self.literal({"t": "true", "f": "false", "n": "null"}[c])
        else:
            self.fail("looking for beginning of value")

    def obj(self) -> None:
        self.i += 1
        self.ws()
        if self.peek() == "}":
            self.i += 1
            return
        while True:
            self.ws()
            if self.peek() != '"':
                self.fail("looking for beginning of object key string")
            self.string()
            self.ws()
            if self.peek() != ":":
                self.fail("after object key")
            self.i += 1
            self.value()
            self.ws()
            c = self.peek()
            self.i += 1
            if c == "}":
                return
            if c != ",":
                self.i -= 1
                self.fail("after object key:value pair")

    def arr(self) -> None:
        self.i += 1
        self.ws()
        if self.peek() == "]":
            self.i += 1
            return
        while True:
            self.value()
            self.ws()
            c = self.peek()
            self.i += 1
            if c == "]":
                return
            if c != ",":
                self.i -= 1
                self.fail("after array element")

    def string(self) -> None:
        self.i += 1
        while True:
            c = self.peek()
            if c == '"':
                self.i += 1
                return
            if c == "\\":
                self.i += 1
                e = self.peek()
                if e in '"\\/bfnrt':
                    self.i += 1
                elif e == "u":
                    self.i += 1
                    for _ in range(4):
                        if self.peek() not in "0123456789abcdefABCDEF":
                            self.fail("in \\u hexadecimal character escape")
                        self.i += 1
                else:
                    self.fail("in string escape code")
            elif ord(c) < 0x20:
                self.fail("in string literal")
            else:
                self.i += 1

    def digits(self) -> None:
        while self.i < len(self.t) and self.t[self.i].isdigit():
            self.i += 1

    def number(self) -> None:
        if self.peek() == "-":
            self.i += 1
        c = self.peek()
        if c == "0":
            self.i += 1
        elif c.isdigit():
            self.digits()
        else:
            self.fail("in numeric literal")
        if self.i < len(self.t) and self.t[self.i] == ".":
            self.i += 1
            if not self.peek().isdigit():
                self.fail("after decimal point in numeric literal")
            self.digits()
        if self.i < len(self.t) and self.t[self.i] in "eE":
            self.i += 1
            if self.peek() in "+-":
                self.i += 1
            if not self.peek().isdigit():
                self.fail("in exponent of numeric literal")
            self.digits()

    def literal(self, word: str) -> None:
        self.i += 1
        for ch in word[1:]:
            if self.peek() != ch:
                self.fail(f"in literal {word} (expecting {_quote(ch)})")
            self.i += 1


def syntax_error(text: str) -> str | None:
    """Go's error for ``text``, or None when Go would accept it."""
    scan = _Scan(text)
    try:
        scan.value()
        scan.ws()
        if scan.i < len(text):
            scan.fail("after top-level value")
    except _Eof:
        return "unexpected EOF"
    except _Bad as exc:
        return str(exc)
    return None

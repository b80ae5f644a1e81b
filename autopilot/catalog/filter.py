"""A subset of Consul's ``?filter=`` language (go-bexpr), applied to a read's JSON result.

Supported: ``Sel == v``, ``Sel != v``, ``v in Sel``, ``v not in Sel``, ``Sel contains v``,
``Sel not contains v``, ``Sel matches "re"``, ``Sel not matches "re"``, ``Sel is empty``,
``Sel is not empty``, ``and``, ``or``, ``not``, parentheses. Selectors are dotted paths
(``Service.Tags``, ``Node.Meta.rack``, ``Service.Meta["k"]``); a path crossing a list yields
every element's value and ``==`` then holds when any of them matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Item = Any
Pred = Callable[[Item], bool]
_MISSING = object()
_TOKEN = re.compile(r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<op>==|!=|\(|\)|\[|\]|\.)
  | (?P<word>[A-Za-z0-9_\-/:+*@]+)
)""", re.X)


class FilterError(ValueError):
    """Answered as 400 ``Failed to create boolean expression evaluator: <message>``."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise FilterError(f"1:{pos + 1}: unexpected character {text[pos]!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "str":
            value = value[1:-1] if value[0] == "`" else re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append((kind, value))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, str] | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def word(self, *words: str, k: int = 0) -> bool:
        t = self.peek(k)
        return t is not None and t[0] == "word" and t[1] in words

    def take(self) -> tuple[str, str]:
        t = self.peek()
        if t is None:
            raise FilterError("unexpected end of expression")
        self.i += 1
        return t

    def parse(self) -> Pred:
        if not self.toks:
            raise FilterError("empty expression")
        pred = self.or_expr()
        if self.peek() is not None:
            raise FilterError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return pred

    def or_expr(self) -> Pred:
        parts = [self.and_expr()]
        while self.word("or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else lambda it: any(p(it) for p in parts)

    def and_expr(self) -> Pred:
        parts = [self.not_expr()]
        while self.word("and"):
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else lambda it: all(p(it) for p in parts)

    def not_expr(self) -> Pred:
        if self.word("not"):
            self.take()
            inner = self.not_expr()
            return lambda it: not inner(it)
        if self.peek() == ("op", "("):
            self.take()
            inner = self.or_expr()
            if self.take() != ("op", ")"):
                raise FilterError("missing ')'")
            return inner
        return self.match()

    def value(self) -> str:
        kind, text = self.take()
        if kind not in ("str", "word"):
            raise FilterError(f"expected a value, got {text!r}")
        return text

    def selector(self) -> list[str]:
        kind, text = self.take()
        if kind != "word":
            raise FilterError(f"expected a selector, got {text!r}")
        path = [text]
        while self.peek() in (("op", "."), ("op", "[")):
            if self.take() == ("op", "."):
                path.append(self.value())
            else:
                path.append(self.value())
                if self.take() != ("op", "]"):
                    raise FilterError("missing ']'")
        return path

    def match(self) -> Pred:
        # "value" [not] in Selector
        if self.word("in", k=1) or (self.word("not", k=1) and self.word("in", k=2)):
            val = self.value()
            neg = self.word("not")
            if neg:
                self.take()
            self.take()
            path = self.selector()
            return _negate(neg, lambda it: any(_contains(v, val) for v in _select(it, path)))
        path = self.selector()
        t = self.peek()
        if t == ("op", "=="):
            self.take()
            val = self.value()
            return lambda it: any(_eq(v, val) for v in _select(it, path))
        if t == ("op", "!="):
            self.take()
            val = self.value()
            return lambda it: not any(_eq(v, val) for v in _select(it, path))
        neg = self.word("not")
        if neg:
            self.take()
        if self.word("contains"):
            self.take()
            val = self.value()
            return _negate(neg, lambda it: any(_contains(v, val) for v in _select(it, path)))
        if self.word("matches"):
            self.take()
            try:
                rx = re.compile(self.value())
            except re.error as exc:
                raise FilterError(f"invalid regular expression: {exc}") from None
            return _negate(neg, lambda it: any(isinstance(v, str) and rx.search(v)
                                               for v in _select(it, path)))
        if not neg and self.word("is"):
            self.take()
            empty_neg = self.word("not")
            if empty_neg:
                self.take()
            if not self.word("empty"):
                raise FilterError("expected 'empty'")
            self.take()
            return _negate(empty_neg, lambda it: all(_empty(v) for v in _select(it, path)))
        raise FilterError(f"expected an operator after {'.'.join(path)!r}")


def _negate(neg: bool, pred: Pred) -> Pred:
    return (lambda it: not pred(it)) if neg else pred


def _select(item: Any, path: list[str]) -> list[Any]:
    values = [item]
    for part in path:
        nxt: list[Any] = []
        for v in values:
            if isinstance(v, list):
                nxt += [e.get(part, _MISSING) if isinstance(e, dict) else _MISSING for e in v]
            elif isinstance(v, dict):
                nxt.append(v.get(part, _MISSING))
            else:
                nxt.append(_MISSING)
        values = nxt
    return [v for v in values if v is not _MISSING] or [None]


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)


def _eq(v: Any, literal: str) -> bool:
    if isinstance(v, list | dict):
        return False
    return _scalar(v) == literal


def _contains(v: Any, literal: str) -> bool:
    if isinstance(v, list):
        return any(_scalar(e) == literal for e in v)
    if isinstance(v, dict):
        return literal in v
    if isinstance(v, str):
        return literal in v
    return False


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, str | list | dict) and len(v) == 0)


def compile_filter(text: str) -> Pred:
    return _Parser(text).parse()

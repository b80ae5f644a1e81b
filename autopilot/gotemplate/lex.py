"""Lexing: split a template into text and actions (trim markers, comments), and an
action into tokens (Go's text/template/parse/lex.go)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from autopilot.gotemplate.errors import TemplateError


@dataclass
class Token:
    """One lexical item of an action."""

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


def lex_action(src: str, start: int, end: int) -> list[Token]:
    """Tokens of the action text src[start:end]; positions are absolute offsets."""
    toks: list[Token] = []
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
            toks.append(Token("str", _unquote(src[i + 1:j], '"', i), i, space))
            i = j + 1
        elif ch == "`":
            j = src.find("`", i + 1, end)
            if j < 0:
                raise TemplateError("unterminated raw quoted string", 0, i)
            toks.append(Token("str", src[i + 1:j].replace("\r", ""), i, space))
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
            toks.append(Token("num", ord(text), i, space))
            i = j + 1
        elif ch == "|":
            toks.append(Token("pipe", "|", i, space))
            i += 1
        elif ch in "(),":
            toks.append(Token(ch, ch, i, space))
            i += 1
        elif src.startswith(":=", i):
            toks.append(Token(":=", ":=", i, space))
            i += 2
        elif ch == "=":
            toks.append(Token("=", "=", i, space))
            i += 1
        elif ch == "$":
            m = _IDENT.match(src, i + 1, end)
            name = "$" + (m.group(0) if m else "")
            toks.append(Token("var", name, i, space))
            i += len(name)
        elif ch == "." and not (i + 1 < end and src[i + 1].isdigit()):
            m = _IDENT.match(src, i + 1, end)
            if m:
                toks.append(Token("field", m.group(0), i, space))
                i = m.end()
            else:
                toks.append(Token("dot", ".", i, space))
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
            toks.append(Token("num", value, i, space))
            i = m.end()
        elif ch.isalpha() or ch == "_":
            m = _IDENT.match(src, i, end)
            assert m
            word = m.group(0)
            if word in ("true", "false"):
                toks.append(Token("bool", word == "true", i, space))
            elif word == "nil":
                toks.append(Token("nil", None, i, space))
            elif word in _KEYWORDS:
                toks.append(Token("kw", word, i, space))
            else:
                toks.append(Token("ident", word, i, space))
            i = m.end()
        else:
            raise TemplateError(f"unexpected {ch!r} in command", 0, i)
        space = False
        assert i > tok_start
    toks.append(Token("eof", None, end, True))
    return toks


# ----------------------------------------------------------------------------------------


def segments(src: str) -> list[tuple[str, int, int]]:
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

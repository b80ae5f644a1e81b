"""Parsing: tokens into the parse tree, `define`/`block` bodies collected apart (Go's
text/template/parse/parse.go)."""

from __future__ import annotations

from autopilot.gotemplate.errors import TemplateError
from autopilot.gotemplate.lex import Token, lex_action, segments
from autopilot.gotemplate.node import (
    Action,
    Branch,
    Call,
    Command,
    Jump,
    Node,
    Operand,
    Pipeline,
    Text,
)


class Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.segs = segments(src)
        self.k = 0
        self.defines: dict[str, list[Node]] = {}
        self.range_depth = 0

    def parse(self) -> list[Node]:
        nodes, term = self.list()
        if term is not None:
            raise TemplateError(f"unexpected {{{{{term[0].value}}}}}", 0, term[0].pos)
        return nodes

    def list(self) -> tuple[list[Node], tuple[Token, list[Token]] | None]:
        """Nodes up to an {{else}}/{{end}} (returned as the terminator) or the end."""
        nodes: list[Node] = []
        while self.k < len(self.segs):
            kind, a, b = self.segs[self.k]
            self.k += 1
            if kind == "text":
                if b > a:
                    nodes.append(Text(a, self.src[a:b]))
                continue
            toks = lex_action(self.src, a, b)
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
            nodes.append(Action(first.pos, self.pipeline(toks, 0, allow_decl=True)[0]))
        return nodes, None

    def control(self, word: str, first: Token, rest: list[Token]) -> Node | None:
        if word in ("if", "with", "range"):
            return self.branch(word, first, rest)
        if word in ("break", "continue"):
            if self.range_depth == 0:
                raise TemplateError(f"{{{{{word}}}}} outside {{{{range}}}}", 0, first.pos)
            if rest[0].kind != "eof":
                raise TemplateError(f"unexpected {rest[0].value!r} in {word}", 0, rest[0].pos)
            return Jump(first.pos, word)
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
            return Call(first.pos, name, pipe) if word == "block" else None
        if word == "template":
            if rest[0].kind != "str":
                raise TemplateError("template: expected a quoted template name", 0, first.pos)
            pipe = self.pipeline(rest, 1, allow_decl=False)[0] if rest[1].kind != "eof" \
                else None
            return Call(first.pos, rest[0].value, pipe)
        raise TemplateError(f"unexpected {{{{{word}}}}}", 0, first.pos)

    def branch(self, word: str, first: Token, rest: list[Token]) -> Branch:
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
        return Branch(first.pos, word, pipe, body, orelse)

    def pipeline(self, toks: list[Token], i: int, allow_decl: bool,
                 range_decl: bool = False, until: str = "eof") -> tuple[Pipeline, int]:
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
        cmds: list[Command] = []
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
        return Pipeline(start, decl, assign, cmds), i

    def command(self, toks: list[Token], i: int) -> tuple[Command, int]:
        start = toks[i].pos
        args: list[Operand] = []
        while toks[i].kind not in ("pipe", ")", "eof"):
            if args and not toks[i].space_before and toks[i].kind not in ("(",):
                raise TemplateError(f"missing space before {toks[i].value!r}", 0, toks[i].pos)
            op, i = self.operand(toks, i)
            args.append(op)
        if not args:
            raise TemplateError("missing value for command", 0, toks[i].pos)
        return Command(start, args), i

    def operand(self, toks: list[Token], i: int) -> tuple[Operand, int]:
        t = toks[i]
        if t.kind in ("str", "num", "bool", "nil"):
            op = Operand(t.pos, "literal" if t.kind != "nil" else "nil", t.value)
            i += 1
        elif t.kind == "dot":
            op = Operand(t.pos, "dot")
            i += 1
        elif t.kind == "field":
            op = Operand(t.pos, "field", None, [t.value])
            i += 1
        elif t.kind == "var":
            op = Operand(t.pos, "var", t.value)
            i += 1
        elif t.kind == "ident":
            op = Operand(t.pos, "ident", t.value)
            i += 1
        elif t.kind == "(":
            pipe, i = self.pipeline(toks, i + 1, allow_decl=True, until=")")
            op = Operand(t.pos, "pipe", pipe)
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

"""Execution: walk the parse tree over the data, with bounded depth, output and steps
(Go's text/template/exec.go)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from autopilot.gotemplate.errors import ExecError, TemplateError
from autopilot.gotemplate.fmt import go_format, go_quote, go_type
from autopilot.gotemplate.funcs import NOARG, truth
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


class Program(Protocol):
    """What execution needs of a parsed template (`template.Template` is one): its
    ``define``d bodies, its functions, and a way to place an error in its source."""

    defines: dict[str, list[Node]]
    funcs: dict[str, tuple[Callable[..., Any], int, int]]

    def _at(self, message: str, offset: int) -> TemplateError: ...

MAX_DEPTH = 100  # nested {{template}} calls
MAX_OUTPUT = 16 << 20  # bytes of rendered text: a runaway range must fail, not fill memory
MAX_STEPS = 1_000_000  # nodes executed: nested loops that print nothing must end too


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


# ----------------------------------------------------------------------------------------


class State:
    def __init__(self, tpl: Program, data: Any, out: list[str]) -> None:
        self.tpl = tpl
        self.out = out
        self.vars: list[tuple[str, Any]] = [("$", data)]
        self.depth = 0
        self.size = 0
        self.steps = 0
        self.chunks: list[tuple[int, int, bool]] = []

    def fail(self, node: Node, message: str) -> TemplateError:
        return self.tpl._at(message, node.pos)

    def emit(self, node: Node, text: str) -> None:
        if not text:
            return
        self.chunks.append((self.size, node.pos, isinstance(node, Text)))
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            raise self.fail(node, f"rendered text exceeds {MAX_OUTPUT >> 20} MiB")
        self.out.append(text)

    def run(self, nodes: list[Node], dot: Any) -> None:
        for node in nodes:
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise self.fail(node, f"template runs more than {MAX_STEPS} steps")
            if isinstance(node, Text):
                self.emit(node, node.text)
            elif isinstance(node, Action):
                value = self.pipeline(node.pipe, dot)
                if not node.pipe.decl:
                    self.emit(node, "<no value>" if value is None else go_format(value))
            elif isinstance(node, Branch):
                self.branch(node, dot)
            elif isinstance(node, Jump):
                raise _Break() if node.kind == "break" else _Continue()
            elif isinstance(node, Call):
                self.call_template(node, dot)

    def call_template(self, node: Call, dot: Any) -> None:
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

    def branch(self, node: Branch, dot: Any) -> None:
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

    def range(self, node: Branch, dot: Any) -> None:
        pipe = node.pipe
        value = self.pipeline(Pipeline(pipe.pos, [], False, pipe.cmds), dot)
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

    def setvar(self, node: Node, name: str, value: Any, assign: bool) -> None:
        if not assign:
            self.vars.append((name, value))
            return
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise self.fail(node, f"undefined variable: {name}")

    def getvar(self, node: Node, name: str) -> Any:
        for n, v in reversed(self.vars):
            if n == name:
                return v
        raise self.fail(node, f"undefined variable: {name}")

    def pipeline(self, pipe: Pipeline, dot: Any) -> Any:
        value: Any = NOARG
        for cmd in pipe.cmds:
            value = self.command(cmd, dot, value)
        for name in pipe.decl:
            self.setvar(pipe, name, value, pipe.assign)
        return value

    def command(self, cmd: Command, dot: Any, final: Any) -> Any:
        first = cmd.args[0]
        if first.kind == "ident" and not first.chain:
            return self.call(first, cmd.args[1:], dot, final)
        if len(cmd.args) > 1 or final is not NOARG:
            what = first.chain[-1] if first.chain else go_format(first.value)
            raise self.fail(first, f"can't give argument to non-function {what}")
        if first.kind == "nil":
            raise self.fail(first, "nil is not a command")
        return self.operand(first, dot)

    def operand(self, op: Operand, dot: Any) -> Any:
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
            value = self.call(op, [], dot, NOARG)
        else:  # pragma: no cover - the parser makes no other kinds
            raise self.fail(op, f"bad operand {op.kind}")
        for name in op.chain:
            if isinstance(value, Mapping):
                value = value.get(name, "")  # missingkey=zero on map[string]string
            else:
                raise self.fail(op, f"can't evaluate field {name} in type {go_type(value)}")
        return value

    def call(self, op: Operand, args: list[Operand], dot: Any, final: Any) -> Any:
        name = op.value
        if name in ("and", "or"):
            ops: list[Any] = list(args)
            if final is not NOARG:
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
        if final is not NOARG:
            values.append(final)
        if len(values) < lo or (hi >= 0 and len(values) > hi):
            want = str(lo) if lo == hi else f"at least {lo}" if hi < 0 else f"{lo} to {hi}"
            raise self.fail(op, f"wrong number of args for {name}: want {want} got "
                                f"{len(values)}")
        try:
            return fn(*values)
        except ExecError as exc:
            raise self.fail(op, f"error calling {name}: {exc}") from None
        except (ValueError, OverflowError, TypeError, RecursionError) as exc:
            raise self.fail(op, f"error calling {name}: {exc}") from None

"""The parse tree (Go's text/template/parse/node.go)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    """A parse-tree node; ``pos`` is its offset in the template text."""

    pos: int


@dataclass
class Text(Node):
    """Literal text between actions."""

    text: str


@dataclass
class Operand(Node):
    """One term of a command: a literal, ``.``, a field chain, a variable, a function or a nested pipeline."""

    kind: str  # literal dot field var ident pipe
    value: Any = None  # literal value / var name / func name / nested pipeline
    chain: list[str] = field(default_factory=list)  # .A.B after the term


@dataclass
class Command(Node):
    """A function call or a single operand, with its arguments."""

    args: list[Operand]


@dataclass
class Pipeline(Node):
    """Commands joined by ``|``, with the variables it declares or assigns."""

    decl: list[str]
    assign: bool  # `=` instead of `:=`
    cmds: list[Command]


@dataclass
class Action(Node):
    """``{{ pipeline }}``: its value is printed."""

    pipe: Pipeline


@dataclass
class Branch(Node):
    """``if``, ``with`` or ``range``, with its body and ``else`` part."""

    kind: str  # if with range
    pipe: Pipeline
    body: list[Node]
    orelse: list[Node] | None


@dataclass
class Jump(Node):
    """``break`` or ``continue`` inside a ``range``."""

    kind: str  # break continue


@dataclass
class Call(Node):
    """``template``: another named template, with an optional pipeline as its dot."""

    name: str
    pipe: Pipeline | None

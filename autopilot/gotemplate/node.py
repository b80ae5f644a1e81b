"""The parse tree (Go's text/template/parse/node.go)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    pos: int


@dataclass
class Text(Node):
    text: str


@dataclass
class Operand(Node):
    kind: str  # literal dot field var ident pipe
    value: Any = None  # literal value / var name / func name / nested pipeline
    chain: list[str] = field(default_factory=list)  # .A.B after the term


@dataclass
class Command(Node):
    args: list[Operand]


@dataclass
class Pipeline(Node):
    decl: list[str]
    assign: bool  # `=` instead of `:=`
    cmds: list[Command]


@dataclass
class Action(Node):
    pipe: Pipeline


@dataclass
class Branch(Node):
    kind: str  # if with range
    pipe: Pipeline
    body: list[Node]
    orelse: list[Node] | None


@dataclass
class Jump(Node):
    kind: str  # break continue


@dataclass
class Call(Node):
    name: str
    pipe: Pipeline | None

"""The engine's one error type, with the line and column it happened at."""

from __future__ import annotations


class TemplateError(Exception):
    """A template that cannot be parsed or executed; ``line``/``column`` are 1-based."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(f"{line}:{column}: {message}" if line else message)
        self.message = message
        self.line = line
        self.column = column


class ExecError(Exception):
    """Raised inside execution; turned into TemplateError with the node's position."""

"""What every section's validation shares: the constants, error reporting with file and
line, and reading an object's members case-insensitively."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from autopilot.config.coerce import Invalid, show
from autopilot.config.json5parse import Path

T = TypeVar("T")

#: ContainerPilot's rule for service and watch names
NAME_RE = re.compile(r"^[a-z][a-zA-Z0-9\-]+$")




def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


class ValidatorBase:
    """Error collection and the readers every section uses."""

    def __init__(self, filename: str, positions: dict[Path, tuple[int, int]] | None = None):
        self.filename = filename
        #: relative template sources are taken from the config file's directory
        self.base_dir = os.path.dirname(os.path.abspath(filename)) \
            if filename and not filename.startswith("<") else ""
        self.positions = positions or {}
        self.errors: list[str] = []
        self.warnings: list[str] = []
        #: id(built object) -> its path as written, e.g. ("jobs", 3)
        self.origin: dict[int, Path] = {}

    def _locate(self, path: Path) -> str:
        p = path
        while p not in self.positions and p:
            p = p[:-1]
        pos = self.positions.get(p)
        return f"{self.filename}:{pos[0]}" if pos else self.filename

    def _line(self, path: Path, msg: str, at: Path | None = None) -> str:
        where = format_path(path)
        return f"{self._locate(path if at is None else at)}: {where + ': ' if where else ''}{msg}"

    def error(self, path: Path, msg: str, at: Path | None = None) -> None:
        """Record a problem with the field at ``path`` (its line is looked up at ``at``)."""
        self.errors.append(self._line(path, msg, at))

    def warn(self, path: Path, msg: str) -> None:
        self.warnings.append(self._line(path, msg))

    def fields(self, path: Path, raw: Any, allowed: list[str]) -> dict[str, tuple[Any, Path]] | None:
        """The object's members by canonical key -> (value, path as written); unknown keys
        are reported together. ``null`` members count as absent."""
        if not isinstance(raw, dict):
            self.error(path, f"expected an object, got {show(raw)}")
            return None
        lower = {k.lower(): k for k in allowed}
        out: dict[str, tuple[Any, Path]] = {}
        unknown = []
        for key, value in raw.items():
            canon = key if key in allowed else lower.get(key.lower())
            if canon is None:
                unknown.append(key)
                continue
            if value is not None:
                out[canon] = (value, (*path, key))
        if unknown:
            names = ", ".join(f'"{k}"' for k in unknown)
            msg = f"unknown keys: [{names}]" if path else f"unknown config keys: [{names}]"
            hints = []
            import difflib  # only for a config with unknown keys (150 KB otherwise)

            for k in unknown:
                close = difflib.get_close_matches(k, allowed, n=1, cutoff=0.6)
                if close:
                    hints.append(f'"{k}" -> "{close[0]}"')
            if hints:
                msg += f" (did you mean {', '.join(hints)}?)"
            self.error(path, msg, at=(*path, unknown[0]))
        return out

    def take(self, f: dict[str, tuple[Any, Path]], key: str, conv: Callable[[Any], T],
             default: Any = None) -> Any:
        if key not in f:
            return default
        value, path = f[key]
        try:
            return conv(value)
        except Invalid as exc:
            self.error(path, str(exc))
            return default

    def path_of(self, f: dict[str, tuple[Any, Path]], key: str, parent: Path) -> Path:
        return f[key][1] if key in f else (*parent, key)

    def positive(self, f: dict, key: str, parent: Path, value: float | None,
                 what: str = "must be > 0") -> None:
        if value is not None and value <= 0:
            self.error(self.path_of(f, key, parent), what)

    def each(self, entry: tuple[Any, Path], build: Callable[[Any, Path], T | None]) -> list[T]:
        raw, path = entry
        if not isinstance(raw, list):
            if isinstance(raw, dict):
                raw = [raw]  # mapstructure: a single value where a list is expected
                self.positions.setdefault((*path, 0), self.positions.get(path, (0, 0)))
            else:
                self.error(path, f"expected an array, got {show(raw)}")
                return []
        out = []
        for i, item in enumerate(raw):
            if item is None:
                continue  # ContainerPilot drops null items too
            built = build(item, (*path, i))
            if built is not None:
                out.append(built)
                self.origin[id(built)] = (*path, i)
        return out

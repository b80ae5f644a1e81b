"""What a template can read from the catalog, as hashable dependencies.

Each dependency knows how to fetch its current value (and the catalog index) and how to
block until that value may have changed (``index``/``wait``: Consul's blocking queries).
The value is normalised to plain data that compares equal when nothing a template could
see has changed, so a bump of the index alone never re-renders.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from autopilot.discovery.entries import normalise_service
from autopilot.discovery.http import Params, Response, blocking, send

if TYPE_CHECKING:
    import consul

__all__ = ["Dep", "FetchError", "normalise_service"]


class FetchError(Exception):
    """The catalog could not answer (unreachable, error status)."""


def _decode(raw: str | None) -> str | None:
    if raw is None:
        return None
    return base64.b64decode(raw).decode("utf-8", "replace")


@dataclass(frozen=True)
class Dep:
    """One catalog read a template made (service, key or tree), to watch for changes."""

    kind: Literal["service", "key", "tree"]
    name: str
    tag: str | None = None
    passing: bool = True

    def __str__(self) -> str:
        extra = f" tag={self.tag}" if self.tag else ""
        extra += "" if self.passing or self.kind != "service" else " all"
        return f"{self.kind}({self.name}{extra})"

    def query(self) -> tuple[str, Params]:
        """The Consul path and parameters that read this dependency."""
        if self.kind == "service":
            params = ([("passing", "1")] if self.passing else []) + \
                ([("tag", self.tag)] if self.tag else [])
            return f"/v1/health/service/{self.name}", params
        if self.kind == "key":
            return f"/v1/kv/{self.name}", []
        return f"/v1/kv/{self.name}", [("recurse", "1")]

    def parse(self, resp: Response) -> Any:
        """The normalised value of one answer; FetchError for an error status."""
        if resp.code not in (200, 404):
            raise FetchError(f"GET {self.query()[0]}: {resp.code} {resp.body.strip()}")
        found = resp.code == 200 and bool(resp.body)
        if self.kind == "service":
            return normalise_service(resp.json() if found else [])
        if self.kind == "key":
            if not found:
                return None
            e = resp.json()[0]
            return {"Value": _decode(e.get("Value")), "Session": e.get("Session") or None,
                    "LockIndex": int(e.get("LockIndex", 0))}
        if not found:
            return []
        prefix = self.name.rstrip("/") + "/" if self.name else ""
        return [{"Key": e["Key"], "Name": e["Key"][len(prefix):] if e["Key"].startswith(prefix)
                 else e["Key"], "Value": _decode(e.get("Value")) or ""}
                for e in sorted(resp.json(), key=lambda e: e["Key"])
                if not e["Key"].endswith("/")]  # folders hold no value

    def fetch(self, c: consul.Consul, *, index: int = 0, wait: str | None = None,
              timeout: float = 5.0) -> tuple[int, Any]:
        """(catalog index, normalised value) from a worker thread's client (a render);
        blocks when ``index`` is given."""
        path, params = self.query()
        resp = send(c, "GET", path, params=params + blocking(index, wait), timeout=timeout)
        return resp.index, self.parse(resp)

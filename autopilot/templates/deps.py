"""What a template can read from the catalog, as hashable dependencies.

Each dependency knows how to fetch its current value (and the catalog index) and how to
block until that value may have changed (``index``/``wait``: Consul's blocking queries).
The value is normalised to plain data that compares equal when nothing a template could
see has changed, so a bump of the index alone never re-renders.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal

import consul

STATUS_ORDER = {"passing": 0, "warning": 1, "critical": 2, "maintenance": 3}


class FetchError(Exception):
    """The catalog could not answer (unreachable, error status)."""


def _get(c: consul.Consul, path: str, params: list, timeout: float) -> tuple[int, int, str]:
    http = c.http
    # requests' own exceptions pass through: the client counts them as "unreachable"
    resp = http.session.get(http.uri(path, params), headers=c.prepare_headers(),
                            verify=http.verify, cert=http.cert, timeout=timeout)
    index = int(resp.headers.get("X-Consul-Index", "0") or 0)
    if resp.status_code not in (200, 404):
        raise FetchError(f"GET {path}: {resp.status_code} {resp.text.strip()}")
    return resp.status_code, index, resp.text


def _decode(raw: str | None) -> str | None:
    if raw is None:
        return None
    return base64.b64decode(raw).decode("utf-8", "replace")


def _status(checks: list[dict]) -> str:
    worst = "passing"
    for chk in checks or []:
        st = chk.get("Status", "passing")
        if STATUS_ORDER.get(st, 2) > STATUS_ORDER.get(worst, 0):
            worst = st
    return worst


def normalise_service(entries: list[dict]) -> list[dict]:
    """Health entries → the dicts ``service()`` returns, in a stable order."""
    out = []
    for e in entries or []:
        svc, node = e.get("Service") or {}, e.get("Node") or {}
        out.append({
            "ID": svc.get("ID", ""),
            "Name": svc.get("Service", ""),
            "Address": svc.get("Address") or node.get("Address", ""),
            "Port": svc.get("Port", 0),
            "Tags": list(svc.get("Tags") or []),
            "Meta": dict(svc.get("Meta") or {}),
            "Node": node.get("Node", ""),
            "Status": _status(e.get("Checks") or []),
        })
    out.sort(key=lambda s: (s["Node"], s["ID"]))
    return out


@dataclass(frozen=True)
class Dep:
    kind: Literal["service", "key", "tree"]
    name: str
    tag: str | None = None
    passing: bool = True

    def __str__(self) -> str:
        extra = f" tag={self.tag}" if self.tag else ""
        extra += "" if self.passing or self.kind != "service" else " all"
        return f"{self.kind}({self.name}{extra})"

    def fetch(self, c: consul.Consul, *, index: int = 0, wait: str | None = None,
              timeout: float = 5.0) -> tuple[int, Any]:
        """(catalog index, normalised value); blocks when ``index`` is given."""
        params: list = []
        if index:
            params += [("index", index)] + ([("wait", wait)] if wait else [])
        if self.kind == "service":
            if self.passing:
                params.append(("passing", "1"))
            if self.tag:
                params.append(("tag", self.tag))
            code, idx, text = _get(c, f"/v1/health/service/{self.name}", params, timeout)
            return idx, normalise_service(json.loads(text) if code == 200 and text else [])
        if self.kind == "key":
            code, idx, text = _get(c, f"/v1/kv/{self.name}", params, timeout)
            if code == 404 or not text:
                return idx, None
            e = json.loads(text)[0]
            return idx, {"Value": _decode(e.get("Value")), "Session": e.get("Session") or None,
                         "LockIndex": int(e.get("LockIndex", 0))}
        code, idx, text = _get(c, f"/v1/kv/{self.name}", params + [("recurse", "1")], timeout)
        if code == 404 or not text:
            return idx, []
        prefix = self.name.rstrip("/") + "/" if self.name else ""
        return idx, [{"Key": e["Key"], "Name": e["Key"][len(prefix):] if e["Key"].startswith(prefix)
                      else e["Key"], "Value": _decode(e.get("Value")) or ""}
                     for e in sorted(json.loads(text), key=lambda e: e["Key"])
                     if not e["Key"].endswith("/")]  # folders hold no value

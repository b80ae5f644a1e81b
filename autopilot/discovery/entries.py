"""Consul's health entries (``/v1/health/service/<name>``) made plain, in one place.

A health entry nests the service, its node and its checks; what the rest of autopilot
compares or shows is one flat record per instance. A watch compares the address and port of
each (sorted by service ID, as ContainerPilot did); a template sees the whole record.
"""

from __future__ import annotations

from typing import Any

STATUS_ORDER = {"passing": 0, "warning": 1, "critical": 2, "maintenance": 3}


def worst_status(checks: list[dict[str, Any]]) -> str:
    worst = "passing"
    for chk in checks or []:
        st = chk.get("Status", "passing")
        if STATUS_ORDER.get(st, 2) > STATUS_ORDER.get(worst, 0):
            worst = st
    return worst


def normalise_service(entries: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Health entries → one record per instance (ID, Name, Address, Port, Tags, Meta,
    Node, Status), sorted by node then ID. The address is the service's, else its node's."""
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
            "Status": worst_status(e.get("Checks") or []),
        })
    out.sort(key=lambda s: (s["Node"], s["ID"]))
    return out

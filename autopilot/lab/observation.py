"""The lab's observation: what the catalog, the lock and each node's server say right now,
as rows for `autopilot lab status`, and the convergence test the chaos tests wait on.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from typing import Any

import psutil
import requests

from autopilot.lab import netns
from autopilot.lab import redis as redis_service
from autopilot.lab.processes import LabProcesses
from autopilot.lab.state import LabError

#: seconds for one catalog read. A read that fails reads as "no leader" or "no entries": with
#: 1 s, a catalog slow to answer on a loaded machine (one Python process serving every node's
#: heartbeats and blocking queries) could make a chaos test see an election or an empty
#: catalog that did not happen (e.g. S13's epoch held for 4 s, read every 0.2 s). A live
#: catalog answers in milliseconds and a dead one refuses at once: the longer bound costs
#: nothing else.
CATALOG_TIMEOUT = 5.0


class LabObservation(LabProcesses):
    def catalog_entries(self) -> dict[str, dict[str, Any]]:
        """service address:port -> {"health": worst check status, "tags": [...]}."""
        try:
            r = requests.get(f"{self.catalog_url}/v1/health/service/{self.state.service}",
                             timeout=CATALOG_TIMEOUT)
            r.raise_for_status()
        except requests.RequestException:
            return {}
        out: dict[str, dict[str, Any]] = {}
        order = {"passing": 0, "warning": 1, "critical": 2}
        for e in r.json():
            svc = e["Service"]
            addr = f"{svc.get('Address') or e['Node'].get('Address')}:{svc['Port']}"
            statuses = [c["Status"] for c in e.get("Checks", []) if c.get("ServiceID")]
            worst = max(statuses or ["passing"], key=lambda s: order.get(s, 3))
            out[addr] = {"health": worst, "tags": svc.get("Tags") or [], "id": svc["ID"]}
        return out

    def leader(self) -> dict[str, Any] | None:
        """The election key's value (who holds the lock), or None."""
        key = f"service/{self.state.service}/leader"
        try:
            r = requests.get(f"{self.catalog_url}/v1/kv/{key}", timeout=CATALOG_TIMEOUT)
        except requests.RequestException:
            return None
        if r.status_code != 200:
            return None
        entry = r.json()[0]
        if not entry.get("Session"):
            return None
        try:
            value = json.loads(base64.b64decode(entry.get("Value") or b"") or b"{}")
        except ValueError:
            value = {}
        # the election's epoch (it survives a catalog wipe), else the raw LockIndex
        epoch = value.get("epoch") if isinstance(value.get("epoch"), int) else None
        return {**value, "epoch": entry.get("LockIndex") if epoch is None else epoch,
                "lock_index": entry.get("LockIndex"), "session": entry["Session"]}

    #: role (primary | fenced | replica | down), offset and link of one Redis
    redis_role = staticmethod(redis_service.role)

    def status(self, partitions: bool = True) -> list[dict[str, Any]]:
        entries = self.catalog_entries()
        rows = []
        for node in self.state.nodes.values():
            sup = self.supervisor(node)
            if sup is None:
                # the launcher (ip netns exec, unshare, sh) runs but has not exec'd the
                # supervisor yet: a node just (re)started is not a dead one
                proc = "starting" if self.tree(node) else "dead"
            else:
                try:
                    proc = "paused" if sup.status() == psutil.STATUS_STOPPED else "running"
                except psutil.Error:
                    proc = "dead"
            probe = self.service.role
            red = (probe(node.ip, node.port)
                   if proc != "paused" else {"role": "paused", "offset": None, "detail": ""})
            cat = entries.get(node.address, {})
            tags = [t for t in cat.get("tags", []) if t in ("primary", "replica")]
            part = partitions and self.state.mode == "netns" and self.net.is_partitioned(node.n)
            rows.append({
                "node": node.name, "supervisor": proc, "role": red["role"],
                "catalog": cat.get("health", "absent"), "tag": ",".join(tags) or "-",
                "address": node.address, "offset": red["offset"], "detail": red["detail"],
                "partitioned": part,
                # PostgreSQL's extras (timeline, sync state); absent for Redis
                **{k: red[k] for k in ("timeline", "sync") if k in red},
            })
        return rows

    def network_report(self) -> str:
        """What each node's namespace looks like now, and whether it reaches the catalog:
        kept beside a failed chaos test's logs, since the namespaces go with `down` (a node
        once stayed cut off from the catalog, unregistered, while clients reached it)."""
        if self.state.mode != "netns" or self.state.net is None:
            return "loopback lab: no namespaces\n"
        host, _, port = self.catalog_address.rpartition(":")
        probe = ("import socket,time; t=time.monotonic()\n"
                 "try:\n"
                 f" socket.create_connection(({host!r}, {port}), timeout=3).close()\n"
                 " print(f'catalog reachable in {time.monotonic()-t:.3f}s')\n"
                 "except OSError as e:\n"
                 " print(f'catalog NOT reachable after {time.monotonic()-t:.3f}s: {e!r}')")
        out = [f"lab network {self.state.net}, catalog {self.catalog_address}",
               netns.sh("ip", "-br", "link", "show", "master", self.net.bridge,
                        check=False).stdout]
        for node in self.state.nodes.values():
            out.append(f"== {node.name} ({node.ns})")
            for cmd in (["iptables", "-S"], ["ip", "-br", "addr"], ["ip", "neigh"],
                        ["ss", "-tn"], [sys.executable, "-c", probe]):
                try:
                    proc = self.net.in_ns(node.n, *cmd, check=False)
                    out.append(f"$ {' '.join(cmd[:2])}\n{proc.stdout}{proc.stderr}")
                except Exception as exc:  # noqa: BLE001 - a report, best effort
                    out.append(f"$ {' '.join(cmd[:2])}: {exc!r}")
        return "\n".join(out) + "\n"

    def primaries(self) -> list[str]:
        """Names of the nodes whose Redis currently accepts writes (I1: at most one)."""
        return [r["node"] for r in self.status(partitions=False) if r["role"] == "primary"]

    def wait_converged(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait for one primary tagged `primary` and every other node a tagged replica of it."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.status(partitions=False)
            if converged(rows):
                return rows
            time.sleep(0.1)
        raise LabError("the cluster did not converge within "
                       f"{timeout}s:\n{format_table(rows)}")


def converged(rows: list[dict[str, Any]]) -> bool:
    """One tagged, passing primary and every running node a tagged replica following it.
    Dead and paused nodes are left aside; a starting one is not, it has yet to follow."""
    if any(r["supervisor"] == "starting" for r in rows):
        return False
    live = [r for r in rows if r["supervisor"] == "running"]
    prim = [r for r in live if r["role"] == "primary"]
    if len(prim) != 1 or prim[0]["tag"] != "primary" or prim[0]["catalog"] != "passing":
        return False
    following = f"of {prim[0]['address']} link up"
    return all(r is prim[0] or (r["role"] == "replica" and r["tag"] == "replica"
                                and r["catalog"] == "passing" and r["detail"] == following)
               for r in live)


def format_table(rows: list[dict[str, Any]]) -> str:
    cols = ["node", "supervisor", "role", "catalog", "tag", "address", "offset", "detail"]
    if any("timeline" in r for r in rows):  # PostgreSQL: LSN as offset, plus the timeline
        cols.insert(6, "timeline")
    data = [[("" if r.get(c) is None else str(r[c])) + (" (partitioned)" if c == "node" and
             r.get("partitioned") else "") for c in cols] for r in rows]
    widths = [max(len(c), *(len(d[i]) for d in data)) if data else len(c)
              for i, c in enumerate(cols)]
    line = "  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(d, widths, strict=True)) for d in data]
    return "\n".join([line, *body])

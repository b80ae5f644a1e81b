"""Render one Jinja2 template from the catalog, recording every dependency it read.

The functions a template calls (``service``, ``key``, ``keyOrDefault``, ``tree``,
``leader``) read through ``fetch(dep)``; what they read is the set of blocking queries the
component then keeps open, so a template is re-rendered exactly when something it used
changes. Undefined names are errors (StrictUndefined): a typo must not silently render an
empty upstream.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2

from autopilot.templates.deps import Dep


class EnvMap(dict):
    """``env.HOME`` / ``env["HOME"]`` and ``env("HOME", "default")`` in one object."""

    def __call__(self, name: str, default: str = "") -> str:
        return self.get(name, default)

    def __getattr__(self, name: str) -> str:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def node_facts(hostname: str | None = None) -> dict[str, Any]:
    """The node's own facts: hostname and its non-loopback IP addresses."""
    ips: list[str] = []
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    ip = a.address.split("%")[0]
                    if not (ip.startswith("127.") or ip == "::1"):
                        ips.append(ip)
    except Exception:  # noqa: BLE001 - facts are best effort
        pass
    ips.sort(key=lambda ip: (":" in ip, ip))
    return {"hostname": hostname or socket.gethostname(), "ips": ips}


class Reader:
    """The template functions, bound to one render's ``fetch`` and recording its deps."""

    def __init__(self, fetch: Callable[[Dep], Any]) -> None:
        self._fetch = fetch
        self.used: set[Dep] = set()

    def _read(self, dep: Dep) -> Any:
        self.used.add(dep)
        return self._fetch(dep)

    def service(self, name: str, tag: str | None = None, passing: bool = True) -> list[dict]:
        return [dict(s) for s in self._read(Dep("service", name, tag, bool(passing))) or []]

    def key(self, path: str) -> str:
        entry = self._read(Dep("key", path))
        return "" if entry is None or entry["Value"] is None else entry["Value"]

    def key_or_default(self, path: str, default: str = "") -> str:
        entry = self._read(Dep("key", path))
        return default if entry is None or entry["Value"] is None else entry["Value"]

    def tree(self, prefix: str) -> list[dict]:
        return [dict(e) for e in self._read(Dep("tree", prefix)) or []]

    def leader(self, name: str, key: str | None = None) -> dict | None:
        """The holder of ``name``'s election key (see election), or None if nobody holds it."""
        entry = self._read(Dep("key", key or f"service/{name}/leader"))
        if not entry or not entry.get("Session"):
            return None
        try:
            info = json.loads(entry["Value"] or "{}")
        except ValueError:
            info = {}
        if not isinstance(info, dict):
            info = {}
        return {"node": info.get("node", ""), "address": info.get("address", ""),
                "port": info.get("port", 0), "service_id": info.get("service_id", ""),
                "epoch": _epoch(info, entry)}


def _epoch(info: dict, entry: dict) -> int:
    """The fencing epoch the election wrote in the lock value (it survives a catalog wipe);
    the LockIndex for values written without one."""
    e = info.get("epoch")
    return e if isinstance(e, int) and not isinstance(e, bool) and e > 0 \
        else entry.get("LockIndex", 0)


def make_environment(source: str) -> jinja2.Environment:
    """One environment per template file, so `{% include %}` resolves next to it."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(source).resolve().parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(env: jinja2.Environment, source: str, fetch: Callable[[Dep], Any], *,
           node: Mapping[str, Any] | None = None,
           environ: Mapping[str, str] | None = None) -> tuple[str, set[Dep]]:
    """Render ``source`` once; returns (text, the dependencies it read).

    Raises jinja2 errors for template mistakes and whatever ``fetch`` raises for catalog
    failures: the caller keeps the previous file in both cases."""
    reader = Reader(fetch)
    template = env.get_template(Path(source).name)
    text = template.render(
        service=reader.service, key=reader.key, keyOrDefault=reader.key_or_default,
        tree=reader.tree, leader=reader.leader,
        env=EnvMap(os.environ if environ is None else environ),
        node=dict(node or node_facts()),
    )
    return text, reader.used

"""Raw HTTP against a catalog for the catalog contract suite (the ``api`` fixture in
conftest.py, and the robustness tests that start catalogs of their own)."""

from __future__ import annotations

import requests


class Api:
    """Raw HTTP against a catalog: what curl examples from Consul's docs would send."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def get(self, path: str, **kw) -> requests.Response:  # type: ignore[no-untyped-def]
        kw.setdefault("timeout", 10)
        return self.http.get(self.url + path, **kw)

    def put(self, path: str, **kw) -> requests.Response:  # type: ignore[no-untyped-def]
        kw.setdefault("timeout", 10)
        return self.http.put(self.url + path, **kw)

    def delete(self, path: str, **kw) -> requests.Response:  # type: ignore[no-untyped-def]
        kw.setdefault("timeout", 10)
        return self.http.delete(self.url + path, **kw)

    def register(self, name: str, sid: str | None = None, **extra) -> str:  # type: ignore[no-untyped-def]
        sid = sid or name
        body = {"Name": name, "ID": sid, **extra}
        r = self.put("/v1/agent/service/register", json=body)
        assert r.status_code == 200, r.text
        return sid

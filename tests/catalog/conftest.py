"""Fixtures for the catalog contract suite: one catalog per module (tests use unique names so
they do not see each other), a raw HTTP helper and a py-consul client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest
import requests

from tests.helpers import CatalogProcess


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


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CatalogProcess]:
    cat = CatalogProcess(Path(tmp_path_factory.mktemp("catalog"))).start()
    yield cat
    cat.stop()


@pytest.fixture
def api(shared: CatalogProcess) -> Api:
    return Api(shared.url)


@pytest.fixture
def cc(shared: CatalogProcess) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=shared.port)


@pytest.fixture
def name() -> str:
    """A unique service/key name for this test."""
    return "t" + uuid.uuid4().hex[:10]

"""Fixtures for the catalog contract suite: one catalog per module (tests use unique names so
they do not see each other), a raw HTTP helper and a py-consul client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest

from tests.catalog.api import Api
from tests.helpers import CatalogProcess


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

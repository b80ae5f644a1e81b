"""Every ```json5 example in docs/discovery.md loads, and the documented env table matches
what connection.resolve does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autopilot.config import load_text
from autopilot.config.model import ConsulConfig
from autopilot.discovery.connection import resolve

pytestmark = pytest.mark.timeout(30)

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "discovery.md"
TEXT = DOC.read_text()
BLOCKS = [(TEXT.count("\n", 0, m.start()) + 1, m.group(1))
          for m in re.finditer(r"^```json5\n(.*?)^```", TEXT, re.M | re.S)]


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("line,text", BLOCKS, ids=[f"discovery.md:{n}" for n, _ in BLOCKS])
def test_example_loads_without_warnings(line: int, text: str) -> None:
    cfg = load_text(text, f"docs/discovery.md:{line}", {})
    assert cfg.warnings == []


def test_every_documented_variable_is_applied() -> None:
    documented = set(re.findall(r"^\| `(CONSUL_[A-Z_]+)`", TEXT, re.M))
    assert len(documented) == 9
    env = {"CONSUL_HTTP_ADDR": "https://10.9.9.9:8501", "CONSUL_HTTP_SSL": "true",
           "CONSUL_HTTP_TOKEN": "t", "CONSUL_CACERT": "/ca", "CONSUL_CAPATH": "/cas",
           "CONSUL_CLIENT_CERT": "/c", "CONSUL_CLIENT_KEY": "/k",
           "CONSUL_TLS_SERVER_NAME": "n", "CONSUL_HTTP_SSL_VERIFY": "false"}
    assert set(env) == documented
    out = resolve(ConsulConfig(), env)
    assert (out.address, out.scheme, out.token) == ("10.9.9.9:8501", "https", "t")
    t = out.tls
    assert (t.cafile, t.capath, t.clientcert, t.clientkey, t.servername, t.verify) == (
        "/ca", "/cas", "/c", "/k", "n", False)

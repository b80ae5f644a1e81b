"""The catalog over HTTPS (``--tls-cert``/``--tls-key``, mutual TLS with ``--tls-ca``) and
the deferred write of output-only check updates (``--check-update-interval``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import consul
import pytest
import requests
import trustme

from tests.helpers import CatalogProcess, free_port, wait_for

pytestmark = pytest.mark.timeout(60)


def _start_tls(tmp: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "autopilot", "catalog", "--port", str(port),
                             *extra], stdout=(tmp / "cat.log").open("ab"),
                            stderr=subprocess.STDOUT)
    return proc, port


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client")
    files = {"ca": ca.cert_pem, "cert": server.cert_chain_pems[0],
             "key": server.private_key_pem, "client": client.private_key_and_cert_chain_pem}
    out = {}
    for name, blob in files.items():
        path = tmp_path / f"{name}.pem"
        blob.write_to_path(str(path))
        out[name] = str(path)
    return out


def test_https_with_py_consul(tmp_path: Path, pki: dict[str, str]) -> None:
    proc, port = _start_tls(tmp_path, "--tls-cert", pki["cert"], "--tls-key", pki["key"])
    try:
        url = f"https://127.0.0.1:{port}"
        wait_for(lambda: requests.get(url + "/v1/status/leader", verify=pki["ca"],
                                      timeout=1).ok, 15, message="HTTPS catalog")
        c = consul.Consul(host="127.0.0.1", port=port, scheme="https", verify=pki["ca"])
        c.kv.put("k", "v")
        assert c.kv.get("k")[1]["Value"] == b"v"
        with pytest.raises(requests.exceptions.SSLError):  # an unknown CA is refused
            requests.get(url + "/v1/status/leader", timeout=2)
        with pytest.raises(requests.exceptions.ConnectionError):  # no plain HTTP beside it
            requests.get(f"http://127.0.0.1:{port}/v1/status/leader", timeout=2)
    finally:
        proc.terminate()
        proc.wait(10)


def test_mutual_tls(tmp_path: Path, pki: dict[str, str]) -> None:
    proc, port = _start_tls(tmp_path, "--tls-cert", pki["cert"], "--tls-key", pki["key"],
                            "--tls-ca", pki["ca"])
    try:
        url = f"https://127.0.0.1:{port}/v1/status/leader"
        wait_for(lambda: requests.get(url, verify=pki["ca"], cert=pki["client"],
                                      timeout=1).ok, 15, message="mTLS catalog")
        with pytest.raises(requests.exceptions.RequestException):  # no client certificate
            requests.get(url, verify=pki["ca"], timeout=2)
    finally:
        proc.terminate()
        proc.wait(10)


def test_tls_flags_are_checked(tmp_path: Path, pki: dict[str, str]) -> None:
    r = subprocess.run([sys.executable, "-m", "autopilot", "catalog", "--tls-cert", pki["cert"]],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--tls-cert and --tls-key go together" in r.stderr


@pytest.mark.timing
def test_output_only_update_reaches_the_catalog_after_the_interval(catalog_factory) -> None:
    cat: CatalogProcess = catalog_factory("--check-update-interval", "1s")
    api = requests.Session()
    api.put(cat.url + "/v1/agent/service/register", timeout=5,
            json={"Name": "w", "Check": {"TTL": "60s", "Status": "passing"}}).raise_for_status()
    before = api.get(cat.url + "/v1/health/service/w", timeout=5)
    t0 = time.monotonic()
    api.put(cat.url + "/v1/agent/check/pass/service:w?note=new", timeout=5).raise_for_status()
    # the agent shows it at once, the catalog keeps the old output ...
    assert api.get(cat.url + "/v1/agent/checks", timeout=5).json()["service:w"]["Output"] == "new"
    assert api.get(cat.url + "/v1/health/service/w", timeout=5).json()[0]["Checks"][-1][
        "Output"] == ""
    # ... until a blocking query wakes with it, 0.5-1.5 intervals later (Consul's stagger)
    r = api.get(cat.url + "/v1/health/service/w", timeout=10,
                params={"index": before.headers["X-Consul-Index"], "wait": "5s"})
    took = time.monotonic() - t0
    assert r.json()[0]["Checks"][-1]["Output"] == "new"
    assert 0.4 <= took <= 2.5, took
    # a status change is written at once, with its output
    api.put(cat.url + "/v1/agent/check/warn/service:w?note=slow", timeout=5).raise_for_status()
    [entry] = api.get(cat.url + "/v1/health/service/w", timeout=5).json()
    assert (entry["Checks"][-1]["Status"], entry["Checks"][-1]["Output"]) == ("warning", "slow")

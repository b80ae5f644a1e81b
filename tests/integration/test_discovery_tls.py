"""Consul over HTTPS: a CA made by the test, an HTTPS front for the catalog, the CONSUL_* TLS
env conventions, the TLS server name and mutual TLS."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import requests
import trustme

from autopilot import events as ev
from autopilot.config.model import TLSConfig
from autopilot.discovery import ServiceRegistration
from autopilot.events import Event
from tests.integration.discovery_helpers import (
    HOST,
    TLSForwarder,
    agent_services,
    job,
    make_ctx,
    until,
)

pytestmark = pytest.mark.timeout(30)
SERVER_NAME = "consul.test"  # the certificate does not name 127.0.0.1


@pytest.fixture
def pki(tmp_path: Path):
    ca = trustme.CA()
    server = ca.issue_cert(SERVER_NAME)
    client = ca.issue_cert("autopilot-client")
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "client.pem",
             "key": tmp_path / "client.key", "both": tmp_path / "client-both.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["both"]))
    return ca, server, {k: str(v) for k, v in paths.items()}


def server_context(ca: trustme.CA, server: trustme.LeafCert, mutual: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(ctx)
    if mutual:
        ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@pytest.fixture
def https(catalog, pki):
    ca, server, _ = pki
    fwd = TLSForwarder(server_context(ca, server, mutual=False), catalog.port).start()
    yield fwd
    fwd.stop()


@pytest.fixture
def mtls(catalog, pki):
    ca, server, _ = pki
    fwd = TLSForwarder(server_context(ca, server, mutual=True), catalog.port).start()
    yield fwd
    fwd.stop()


async def leader(ctx) -> str:
    return await ctx.consul.run(lambda c: c.status.leader(), timeout=5)


def test_registration_over_https_with_env_ca_and_server_name(catalog, https, pki):
    _, _, paths = pki

    async def scenario():
        ctx = make_ctx(f"127.0.0.1:{https.port}", jobs=[job()], environ={
            "CONSUL_HTTP_SSL": "true", "CONSUL_CACERT": paths["ca"],
            "CONSUL_TLS_SERVER_NAME": SERVER_NAME})
        assert ctx.consul.cfg.scheme == "https"
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        await reg.start()
        try:
            ctx.bus.publish(Event(ev.HEALTHY, "web"))
            await until(lambda: f"web-{HOST}" in agent_services(catalog.url), 5,
                        message="registration over HTTPS")
        finally:
            await reg.stop()
            ctx.consul.close()

    asyncio.run(scenario())


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verification_is_on_by_default(https, pki):
    _, _, paths = pki

    async def scenario():
        # no CA: the system trust store does not know our CA
        ctx = make_ctx(f"127.0.0.1:{https.port}", scheme="https",
                       environ={"CONSUL_TLS_SERVER_NAME": SERVER_NAME})
        with pytest.raises(requests.exceptions.SSLError):
            await leader(ctx)
        ctx.consul.close()
        # the right CA, but the certificate does not name 127.0.0.1 and no server name given
        ctx = make_ctx(f"127.0.0.1:{https.port}", scheme="https",
                       tls=TLSConfig(cafile=paths["ca"]))
        with pytest.raises(requests.exceptions.SSLError):
            await leader(ctx)
        ctx.consul.close()
        # the server name from the config (tls.servername) fixes it
        ctx = make_ctx(f"127.0.0.1:{https.port}", scheme="https",
                       tls=TLSConfig(cafile=paths["ca"], servername=SERVER_NAME))
        assert await leader(ctx)
        ctx.consul.close()
        # the env overrides a wrong server name in the config
        ctx = make_ctx(f"127.0.0.1:{https.port}", scheme="https",
                       tls=TLSConfig(cafile=paths["ca"], servername="wrong.test"),
                       environ={"CONSUL_TLS_SERVER_NAME": SERVER_NAME})
        assert await leader(ctx)
        ctx.consul.close()
        # verification off on request
        ctx = make_ctx(f"127.0.0.1:{https.port}", scheme="https",
                       environ={"CONSUL_HTTP_SSL_VERIFY": "false"})
        assert await leader(ctx)
        ctx.consul.close()

    asyncio.run(scenario())


def test_https_address_in_consul_http_addr(https, pki):
    _, _, paths = pki

    async def scenario():
        # the config leaves the address at its default: CONSUL_HTTP_ADDR supplies it, scheme too
        ctx = make_ctx("127.0.0.1:8500", environ={
            "CONSUL_HTTP_ADDR": f"https://127.0.0.1:{https.port}",
            "CONSUL_CACERT": paths["ca"], "CONSUL_TLS_SERVER_NAME": SERVER_NAME})
        assert await leader(ctx)
        ctx.consul.close()

    asyncio.run(scenario())


def test_mutual_tls(mtls, pki):
    _, _, paths = pki

    async def scenario():
        base = {"CONSUL_HTTP_SSL": "1", "CONSUL_CACERT": paths["ca"],
                "CONSUL_TLS_SERVER_NAME": SERVER_NAME}
        ctx = make_ctx(f"127.0.0.1:{mtls.port}", environ=base)
        with pytest.raises(requests.exceptions.RequestException):
            await leader(ctx)  # no client certificate: refused
        ctx.consul.close()
        ctx = make_ctx(f"127.0.0.1:{mtls.port}", environ=base | {
            "CONSUL_CLIENT_CERT": paths["cert"], "CONSUL_CLIENT_KEY": paths["key"]})
        assert await leader(ctx)
        ctx.consul.close()
        # one PEM with both key and certificate, from the config
        ctx = make_ctx(f"127.0.0.1:{mtls.port}", environ=base,
                       tls=TLSConfig(clientcert=paths["both"]))
        assert await leader(ctx)
        ctx.consul.close()

    asyncio.run(scenario())

"""Where Consul is and how to talk to it: the `consul` config key plus Consul's `CONSUL_*` env.

Precedence (documented in docs/discovery.md):

- address: the config's address wins; ``CONSUL_HTTP_ADDR`` is used only when the config left the
  address at its default (``127.0.0.1:8500``), as ContainerPilot did for an object config with
  no ``address``. A scheme in ``CONSUL_HTTP_ADDR`` (``https://…``) comes along with it.
- ``CONSUL_HTTP_SSL`` (true/false) overrides the scheme.
- ``CONSUL_HTTP_TOKEN`` overrides ``token`` (ContainerPilot).
- ``CONSUL_CACERT``, ``CONSUL_CAPATH``, ``CONSUL_CLIENT_CERT``, ``CONSUL_CLIENT_KEY``,
  ``CONSUL_TLS_SERVER_NAME``, ``CONSUL_HTTP_SSL_VERIFY`` override ``tls.*`` (ContainerPilot).
- TLS verification is on unless ``tls.verify: false`` or ``CONSUL_HTTP_SSL_VERIFY=false``.

py-consul reads some of these variables by itself (``CONSUL_HTTP_TOKEN`` always wins over the
``token`` argument; ``CONSUL_HTTP_ADDR``/``CONSUL_HTTP_SSL``/``CONSUL_HTTP_SSL_VERIFY`` only when
host/port/scheme/verify are not passed). We resolve everything here once, pass every argument
explicitly and then set the token on the client ourselves, so nothing is applied twice.
"""

from __future__ import annotations

import copy
import os
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from autopilot.config.model import ConfigError, ConsulConfig

if TYPE_CHECKING:
    import consul

DEFAULT_ADDRESS = "127.0.0.1:8500"
#: how long py-consul lets requests wait on connect/read for a non-blocking call; a blocking
#: query gets its wait added. Kept short so a hung agent frees a worker thread quickly.
CONNECT_TIMEOUT = 10.0

_TRUE = {"1", "t", "true", "yes", "on"}
_FALSE = {"0", "f", "false", "no", "off"}


def parse_bool(name: str, value: str) -> bool:
    """Go's strconv.ParseBool, the way Consul reads its boolean env vars (plus yes/no)."""
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean (use true or false)", name)


def split_address(address: str, default_scheme: str = "http") -> tuple[str, str, int]:
    """``host:port``, ``http://host:port`` or ``https://host[:port]`` -> (scheme, host, port)."""
    raw = address.strip()
    if not raw:
        raise ConfigError("consul address is empty", "consul.address")
    if "://" not in raw:
        raw = f"{default_scheme}://{raw}"
    parsed = urllib.parse.urlsplit(raw)
    if parsed.scheme not in ("http", "https"):
        raise ConfigError(f"consul address {address!r}: scheme must be http or https",
                          "consul.address")
    try:
        port = parsed.port
    except ValueError as exc:
        raise ConfigError(f"consul address {address!r}: bad port", "consul.address") from exc
    host = parsed.hostname
    if not host:
        raise ConfigError(f"consul address {address!r}: no host", "consul.address")
    if port is None:  # Consul's defaults, as the config loader applies them
        port = 8501 if parsed.scheme == "https" else 8500
    return parsed.scheme, host, port


def resolve(cfg: ConsulConfig, environ: Mapping[str, str] | None = None) -> ConsulConfig:
    """Apply the ``CONSUL_*`` environment to a copy of ``cfg`` (see the module docstring)."""
    env = os.environ if environ is None else environ
    out = copy.deepcopy(cfg)

    def get(name: str) -> str | None:
        value = env.get(name)
        return value if value else None  # an empty variable counts as unset, like Consul

    scheme = out.scheme or "http"
    address = out.address or DEFAULT_ADDRESS
    if "://" in address:  # the loader may leave a URL in address; normalise it
        scheme, host, port = split_address(address, scheme)
        address = f"{host}:{port}"
    env_addr = get("CONSUL_HTTP_ADDR")
    if env_addr and address == DEFAULT_ADDRESS:
        env_scheme, host, port = split_address(env_addr, scheme)
        address = f"{host}:{port}"
        if "://" in env_addr:
            scheme = env_scheme
    ssl = get("CONSUL_HTTP_SSL")
    if ssl is not None:
        scheme = "https" if parse_bool("CONSUL_HTTP_SSL", ssl) else "http"
    if scheme not in ("http", "https"):
        raise ConfigError(f"consul scheme {scheme!r} must be http or https", "consul.scheme")
    out.address, out.scheme = address, scheme

    token = get("CONSUL_HTTP_TOKEN")
    if token is not None:
        out.token = token

    tls = out.tls
    tls.cafile = get("CONSUL_CACERT") or tls.cafile
    tls.capath = get("CONSUL_CAPATH") or tls.capath
    tls.clientcert = get("CONSUL_CLIENT_CERT") or tls.clientcert
    tls.clientkey = get("CONSUL_CLIENT_KEY") or tls.clientkey
    tls.servername = get("CONSUL_TLS_SERVER_NAME") or tls.servername
    verify = get("CONSUL_HTTP_SSL_VERIFY")
    if verify is not None:
        tls.verify = parse_bool("CONSUL_HTTP_SSL_VERIFY", verify)
    return out


_adapter: type | None = None


def server_name_adapter() -> type:
    """``ServerNameAdapter``, defined on first use: requests is loaded only by the py-consul
    path (a template's render), not by every supervisor with
    discovery on (registrations and watches use ``discovery.transport``)."""
    global _adapter
    if _adapter is None:
        import requests.adapters

        class ServerNameAdapter(requests.adapters.HTTPAdapter):
            """Checks the server's certificate against ``server_name`` instead of the URL's host.

            requests has no per-request SNI/hostname option; urllib3 does (``server_hostname``
            for SNI, ``assert_hostname`` for the certificate match), so we add both to the
            pool's key. This is how ``CONSUL_TLS_SERVER_NAME`` works when Consul is reached by
            IP.
            """

            def __init__(self, server_name: str, **kwargs: Any) -> None:
                self.server_name = server_name
                super().__init__(**kwargs)

            def build_connection_pool_key_attributes(self, request, verify, cert=None):  # type: ignore[override]
                host_params, pool_kwargs = super().build_connection_pool_key_attributes(
                    request, verify, cert)
                if host_params.get("scheme") == "https":
                    pool_kwargs["server_hostname"] = self.server_name
                    if verify:
                        pool_kwargs["assert_hostname"] = self.server_name
                return host_params, pool_kwargs

        _adapter = ServerNameAdapter
    return _adapter


def __getattr__(name: str) -> Any:
    if name == "ServerNameAdapter":
        return server_name_adapter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def requests_tls(cfg: ConsulConfig) -> tuple[bool | str, str | tuple[str, str] | None]:
    """``verify`` and ``cert`` arguments for requests from the resolved TLS settings."""
    tls = cfg.tls
    verify: bool | str = bool(tls.verify)
    if tls.verify and (tls.cafile or tls.capath):
        verify = tls.cafile or tls.capath or True
    cert: str | tuple[str, str] | None = None
    if tls.clientcert and tls.clientkey:
        cert = (tls.clientcert, tls.clientkey)
    elif tls.clientcert:  # one PEM holding both certificate and key
        cert = tls.clientcert
    return verify, cert


def build_client(cfg: ConsulConfig, connect_timeout: float = CONNECT_TIMEOUT) -> consul.Consul:
    """A synchronous py-consul client for already-resolved settings (see ``resolve``)."""
    scheme, host, port = split_address(cfg.address, cfg.scheme)
    scheme = cfg.scheme or scheme
    if scheme == "https":
        from autopilot import lazyssl

        lazyssl.require()  # before urllib3 loads: it binds ssl at import
    import consul.std

    verify, cert = requests_tls(cfg)
    if ":" in host:  # IPv6: py-consul pastes the host into the URL as given
        host = f"[{host}]"
    client = consul.std.Consul(host=host, port=port, scheme=scheme, token=cfg.token,
                               verify=verify, cert=cert, connections_timeout=connect_timeout)
    client.token = cfg.token  # py-consul prefers CONSUL_HTTP_TOKEN; `resolve` already decided
    if cfg.tls.servername and scheme == "https":
        client.http.session.mount("https://", server_name_adapter()(cfg.tls.servername))
    return client

"""The `consul` section: the agent address, its TLS and token."""

from __future__ import annotations

import re
from typing import Any

from autopilot.config import coerce
from autopilot.config.coerce import show
from autopilot.config.json5parse import Path
from autopilot.config.model import (
    ConsulConfig,
    TLSConfig,
)
from autopilot.config.validate.base import ValidatorBase


class ConsulSection(ValidatorBase):
    def consul(self, f: dict[str, tuple[Any, Path]]) -> ConsulConfig | None:
        if "consul" not in f:
            return None
        raw, path = f["consul"]
        if raw is False:
            return None
        if raw is True:
            return ConsulConfig()
        if isinstance(raw, str):
            if not raw.strip():
                # ContainerPilot's empty address is the client library's default: the local
                # agent (CONSUL_HTTP_ADDR, else 127.0.0.1:8500); a template over an unset
                # variable gives "" and such images rely on it
                self.warn(path, 'empty: using the local Consul agent ($CONSUL_HTTP_ADDR, else '
                                '127.0.0.1:8500); use false to run without Consul')
                return ConsulConfig()
            cfg = ConsulConfig()
            self.consul_address(cfg, raw.strip(), path)
            return cfg
        c = self.fields(path, raw, ["address", "scheme", "token", "tls"])
        if c is None:
            return None
        cfg = ConsulConfig()
        scheme = self.take(c, "scheme", coerce.to_str)
        if scheme is not None:
            scheme = scheme.lower()
            if scheme not in ("http", "https"):
                self.error(c["scheme"][1], f'must be "http" or "https", got {show(scheme)}')
            else:
                cfg.scheme = scheme
        address = self.take(c, "address", coerce.to_str)
        if address:
            self.consul_address(cfg, address.strip(), c["address"][1], keep_scheme=scheme)
        cfg.token = self.take(c, "token", coerce.to_str) or None
        if "tls" in c:
            t = self.fields(c["tls"][1], c["tls"][0],
                            ["cafile", "capath", "clientcert", "clientkey", "servername",
                             "verify"])
            if t is not None:
                cfg.tls = TLSConfig(
                    cafile=self.take(t, "cafile", coerce.to_str) or None,
                    capath=self.take(t, "capath", coerce.to_str) or None,
                    clientcert=self.take(t, "clientcert", coerce.to_str) or None,
                    clientkey=self.take(t, "clientkey", coerce.to_str) or None,
                    servername=self.take(t, "servername", coerce.to_str) or None,
                    verify=self.take(t, "verify", coerce.to_bool, True),
                )
        return cfg

    def consul_address(self, cfg: ConsulConfig, text: str, path: Path,
                       keep_scheme: str | None = None) -> None:
        """``host:port``, ``http://host:port`` or ``https://host:port``; a missing port is
        Consul's default (8500 for http, 8501 for https)."""
        m = re.match(r"^(https?)://(.*)$", text, re.I)
        if m:
            cfg.scheme = m.group(1).lower()
            text = m.group(2)
        elif keep_scheme:
            cfg.scheme = keep_scheme
        text = text.rstrip("/")
        if not text or "/" in text or " " in text:
            self.error(path, f"invalid Consul address {show(text)} (expected host:port)")
            return
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
            host = f"[{host}]"
        elif text.count(":") > 1:  # a bare IPv6 address
            host, port = f"[{text}]", ""
        else:
            host, _, port = text.partition(":")
        if not port:
            port = "8501" if cfg.scheme == "https" else "8500"
        if not port.isdigit() or not 0 < int(port) < 65536:
            self.error(path, f"invalid port in Consul address {show(text)}")
            return
        cfg.address = f"{host}:{port}"

"""Which IP a job advertises: ContainerPilot's interface specs, resolved at registration time.

Specs, tried in order (the first spec that matches anything wins):

- ``eth0`` / ``eth0:inet`` — the interface's first IPv4 address; ``eth0:inet6`` its first IPv6
- ``eth0[1]`` — the interface's address at that index (IPv4 and IPv6 together, sorted)
- ``inet`` / ``inet6`` — any non-loopback IPv4 / IPv6 address (link-local IPv6 skipped)
- ``10.0.0.0/8``, ``fd00::/8`` — any address inside the network (loopback included)
- ``static:1.2.3.4`` — that address, no lookup

Interfaces are walked sorted by name and each interface's addresses sorted by their bytes, so
the answer does not depend on the kernel's ordering. The addresses come from rtnetlink
(`netlink.addresses`, what getifaddrs returns); psutil is loaded only if netlink is refused.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autopilot.discovery import netlink

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_SPECS = ("eth0:inet", "inet")
_INDEXED = re.compile(r"^([\w.\-@]+)\[(\d+)\]$")
_NAMED = re.compile(r"^([\w.\-@]+)(?::(inet6?))?$")


class InterfaceError(Exception):
    """No interface spec matched, or a spec is malformed."""


@dataclass(frozen=True)
class Spec:
    """One parsed interface spec (a docstring: without one, dataclass builds it with
    inspect.signature, loading inspect, ast and dis: about 1 MB; autopilot/lazyinspect.py)."""

    text: str
    name: str | None = None  # None: any interface
    ipv6: bool = False
    index: int | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    static: IPAddress | None = None

    def matches(self, iface: str, position: int, ip: IPAddress) -> bool:
        if self.network is not None:
            return ip.version == self.network.version and ip in self.network
        if self.name is not None and self.name != iface:
            return False
        if self.index is not None:
            return position == self.index
        if (ip.version == 6) != self.ipv6:
            return False
        if self.name is None:  # inet / inet6: only addresses reachable from elsewhere
            return not ip.is_loopback and not ip.is_link_local
        return True


def parse_spec(text: str) -> Spec:
    s = text.strip()
    if s.startswith("static:"):
        try:
            return Spec(s, static=ipaddress.ip_address(s[len("static:"):]))
        except ValueError as exc:
            raise InterfaceError(f"interface spec {text!r}: not an IP address") from exc
    if s in ("inet", "inet6"):
        return Spec(s, ipv6=s == "inet6")
    if "/" in s:
        try:
            return Spec(s, network=ipaddress.ip_network(s, strict=False))
        except ValueError as exc:
            raise InterfaceError(f"interface spec {text!r}: not a CIDR network") from exc
    m = _INDEXED.match(s)
    if m:
        return Spec(s, name=m.group(1), index=int(m.group(2)))
    m = _NAMED.match(s)
    if m:
        return Spec(s, name=m.group(1), ipv6=m.group(2) == "inet6")
    raise InterfaceError(f"interface spec {text!r} is not understood")


_PARSED: dict[str, Spec] = {}


def _parsed(text: str) -> Spec:
    """``parse_spec``, once per spec: a registration looks its address up every few
    seconds, and ``static:<ip>`` was an ``ipaddress`` parse each time (a Spec is never
    changed after parsing)."""
    spec = _PARSED.get(text)
    if spec is None:
        spec = parse_spec(text)
        if len(_PARSED) < 256:
            _PARSED[text] = spec
    return spec


def _ip_sort_key(ip: IPAddress) -> tuple[int, bytes]:
    return ip.version, ip.packed


def host_addresses() -> dict[str, list[IPAddress]]:
    """Every interface's IPv4/IPv6 addresses, sorted by bytes."""
    try:
        found = netlink.addresses()
    except OSError:  # netlink refused (a seccomp profile, say): getifaddrs through psutil
        import psutil

        found = [(iface, a.family, a.address) for iface, addrs in psutil.net_if_addrs().items()
                 for a in addrs]
    out: dict[str, list[IPAddress]] = {}
    for iface, family, address in found:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            continue
        out.setdefault(iface, []).append(ip)
    return {iface: sorted(ips, key=_ip_sort_key) for iface, ips in out.items()}


def resolve_ip(specs: Sequence[str] | str | None,
               addresses: Mapping[str, Sequence[IPAddress]] | None = None) -> str:
    """The address to advertise for ``specs``; raises ``InterfaceError`` if nothing matches."""
    if isinstance(specs, str):
        specs = [specs]
    specs = list(specs) if specs else list(DEFAULT_SPECS)
    parsed = [_parsed(s) for s in specs]
    table: Mapping[str, Sequence[IPAddress]] | None = addresses
    for spec in parsed:
        if spec.static is not None:
            return str(spec.static)
        if table is None:
            table = host_addresses()
        for iface in sorted(table):
            ips = sorted(table[iface], key=_ip_sort_key)
            for position, ip in enumerate(ips):
                if spec.matches(iface, position, ip):
                    return str(ip)
    raise InterfaceError(f"no interface matches {specs}")


def env_names(job: str) -> list[str]:
    """``CONTAINERPILOT_<JOB>_IP`` and ``AUTOPILOT_<JOB>_IP`` (upper-case, ``-`` -> ``_``)."""
    key = job.upper().replace("-", "_")
    return [f"CONTAINERPILOT_{key}_IP", f"AUTOPILOT_{key}_IP"]

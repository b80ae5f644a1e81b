"""Interface specs: ContainerPilot's spellings, ordering rules, and errors."""

from __future__ import annotations

import ipaddress

import pytest

from autopilot.discovery.interfaces import (
    InterfaceError,
    env_names,
    host_addresses,
    parse_spec,
    resolve_ip,
)

pytestmark = pytest.mark.timeout(10)


def ips(*values: str) -> list:
    return [ipaddress.ip_address(v) for v in values]


# a host as psutil would describe it, kernel order deliberately unsorted
HOST = {
    "lo": ips("127.0.0.1", "::1"),
    "eth1": ips("10.1.0.9", "10.1.0.3", "fd00:1::5"),
    "eth0": ips("fe80::1", "192.168.1.20", "2001:db8::7", "192.168.1.4"),
    "docker0": ips("172.17.0.1"),
}


@pytest.mark.parametrize("specs, expected", [
    (None, "192.168.1.4"),  # default ["eth0:inet", "inet"]; lowest eth0 IPv4 by bytes
    (["eth0"], "192.168.1.4"),
    (["eth0:inet"], "192.168.1.4"),
    (["eth0:inet6"], "2001:db8::7"),  # IPv6 sorted by bytes: 2001: < fe80:
    (["eth1"], "10.1.0.3"),
    (["eth0[0]"], "192.168.1.4"),  # index over the interface's sorted addresses, v4 first
    (["eth0[1]"], "192.168.1.20"),
    (["eth0[2]"], "2001:db8::7"),
    (["inet"], "172.17.0.1"),  # interfaces sorted by name: docker0 < eth0 < eth1; lo skipped
    (["inet6"], "2001:db8::7"),  # docker0 has no IPv6; eth0's global address comes first
    (["10.0.0.0/8"], "10.1.0.3"),
    (["127.0.0.0/8"], "127.0.0.1"),  # CIDR may name loopback on purpose
    (["fd00::/8"], "fd00:1::5"),
    (["lo"], "127.0.0.1"),
    (["lo:inet6"], "::1"),
    (["static:203.0.113.5"], "203.0.113.5"),
    (["eth9", "eth1"], "10.1.0.3"),  # first spec that matches wins
    (["eth1", "static:203.0.113.5"], "10.1.0.3"),
    (["eth9", "static:203.0.113.5"], "203.0.113.5"),
    ("eth1", "10.1.0.3"),  # a plain string, as the config allows
])
def test_specs(specs, expected):
    assert resolve_ip(specs, HOST) == expected


def test_inet_skips_loopback_and_link_local():
    host = {"lo": ips("127.0.0.1", "::1"), "eth0": ips("fe80::1")}
    with pytest.raises(InterfaceError):
        resolve_ip(["inet"], host)
    with pytest.raises(InterfaceError):
        resolve_ip(["inet6"], host)
    assert resolve_ip(["eth0:inet6"], host) == "fe80::1"  # named: taken as is


def test_no_match_names_the_specs():
    with pytest.raises(InterfaceError, match="eth7"):
        resolve_ip(["eth7", "eth8:inet6"], HOST)


@pytest.mark.parametrize("bad", ["static:nope", "10.0.0.0/33", "eth0:inet7", "eth0[x]", ""])
def test_malformed_specs(bad):
    with pytest.raises(InterfaceError):
        parse_spec(bad)


def test_real_host_loopback():
    """Against this machine's real interfaces (psutil), loopback always exists."""
    table = host_addresses()
    assert ipaddress.ip_address("127.0.0.1") in table["lo"]
    assert resolve_ip(["lo"]) == "127.0.0.1"
    assert resolve_ip(["127.0.0.0/8"]) == "127.0.0.1"
    for addrs in table.values():  # zone ids stripped, sorted by bytes
        assert addrs == sorted(addrs, key=lambda a: (a.version, a.packed))


def test_env_names():
    assert env_names("my-app") == ["CONTAINERPILOT_MY_APP_IP", "AUTOPILOT_MY_APP_IP"]

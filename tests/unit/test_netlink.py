"""The rtnetlink address list is what psutil (getifaddrs) reports, on this host and in a
network namespace with aliases, secondary and IPv6 addresses (root only)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import psutil
import pytest

from autopilot.discovery import netlink
from autopilot.discovery.interfaces import host_addresses

pytestmark = pytest.mark.timeout(30)


def from_psutil() -> list[tuple[str, int, str]]:
    return sorted((name, a.family, a.address.split("%", 1)[0])
                  for name, addrs in psutil.net_if_addrs().items() for a in addrs
                  if a.family in (socket.AF_INET, socket.AF_INET6))


def test_same_as_psutil_here() -> None:
    assert sorted(netlink.addresses()) == from_psutil()
    assert "lo" in host_addresses()


COMPARE = """
import json, socket, sys
sys.path.insert(0, sys.argv[1])
import psutil
from autopilot.discovery import netlink
ours = sorted(netlink.addresses())
theirs = sorted((n, a.family, a.address.split("%", 1)[0]) for n, l in psutil.net_if_addrs().items()
                for a in l if a.family in (socket.AF_INET, socket.AF_INET6))
print(json.dumps([ours, theirs]))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                    reason="needs root, unshare and ip")
def test_same_as_psutil_with_aliases_and_secondaries() -> None:
    setup = ("ip link set lo up && ip link add d0 type veth peer name d1 && ip link set d0 up && ip link set d1 up && "
             "ip addr add 192.0.2.1/24 dev d0 && ip addr add 192.0.2.7/24 dev d0 && "
             "ip addr add 198.51.100.1/24 dev d0 label d0:1 && "
             "ip addr add 2001:db8::5/64 dev d0 nodad && "
             "ip addr add 10.9.9.1 peer 10.9.9.2 dev d0 && ")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(["unshare", "--net", "sh", "-c",
                          setup + 'exec "$0" -c "$1" "$2"', sys.executable, COMPARE, root],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    ours, theirs = json.loads(out.stdout)
    assert ours == theirs
    names = {n for n, _, _ in ours}
    assert {"d0", "d0:1", "lo"} <= names
    assert ["d0", socket.AF_INET, "10.9.9.1"] in ours  # the local end, not the peer

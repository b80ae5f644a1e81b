"""Network plumbing for the lab: a bridge, one network namespace per node, partitions.

Addresses come from a private range created ONLY on the lab's own interfaces: the bridge
`ap-lab-br0` holds the host's address (clients, tests) and, as a second address, the
catalog's; node N lives in namespace `ap-lab-N` behind a veth whose inner end is `eth0`
(so autopilot's default `eth0:inet` interface spec finds it). No route leaves the subnet.
A partition is iptables inside the node's namespace, dropping traffic to and from the
catalog's address only, so clients on the host address still reach the node.
"""

from __future__ import annotations

import os
import shutil
import subprocess

BRIDGE = "ap-lab-br0"
PREFIX = "10.231.0"
HOST_IP = f"{PREFIX}.1"
CATALOG_IP = f"{PREFIX}.2"
NS_PREFIX = "ap-lab-"
RULE_COMMENT = "autopilot-lab"


class PlumbingError(RuntimeError):
    pass


def node_ip(n: int) -> str:
    return f"{PREFIX}.{10 + n}"


def ns_name(n: int) -> str:
    return f"{NS_PREFIX}{n}"


def is_root() -> bool:
    return os.geteuid() == 0


def sh(*cmd: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Run one plumbing command; a failure names the command and its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise PlumbingError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def in_ns(n: int, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns_name(n), *cmd, check=check)


def missing_tools(netns: bool) -> list[tuple[str, str]]:
    """(tool, Debian package) pairs this machine lacks for the chosen mode."""
    need = [("redis-server", "redis-server"), ("redis-cli", "redis-tools"),
            ("unshare", "util-linux"), ("flock", "util-linux")]
    if netns:
        need += [("ip", "iproute2"), ("iptables", "iptables")]
    return [(t, p) for t, p in need if shutil.which(t) is None]


def bridge_exists() -> bool:
    return sh("ip", "link", "show", BRIDGE, check=False).returncode == 0


def _forward_rule(action: str) -> list[str]:
    # Bridged frames cross iptables' FORWARD chain when br_netfilter is loaded, and Docker
    # sets its policy to DROP; this rule lets lab traffic stay on the lab bridge, nothing else.
    return ["iptables", action, "FORWARD", "-i", BRIDGE, "-o", BRIDGE,
            "-m", "comment", "--comment", RULE_COMMENT, "-j", "ACCEPT"]


def create_bridge() -> None:
    if not bridge_exists():
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
        sh("ip", "addr", "add", f"{CATALOG_IP}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
    if sh(*_forward_rule("-C"), check=False).returncode != 0:
        sh(*_forward_rule("-I"))


def delete_bridge() -> None:
    while sh(*_forward_rule("-C"), check=False).returncode == 0:
        sh(*_forward_rule("-D"), check=False)
    if bridge_exists():
        sh("ip", "link", "del", BRIDGE, check=False)


def create_node_ns(n: int) -> None:
    ns, host_if, peer = ns_name(n), f"ap-lab-v{n}", f"ap-lab-p{n}"
    delete_node_ns(n)
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer)
    sh("ip", "link", "set", peer, "netns", ns)
    in_ns(n, "ip", "link", "set", peer, "name", "eth0")
    in_ns(n, "ip", "addr", "add", f"{node_ip(n)}/24", "dev", "eth0")
    in_ns(n, "ip", "link", "set", "eth0", "up")
    in_ns(n, "ip", "link", "set", "lo", "up")
    sh("ip", "link", "set", host_if, "master", BRIDGE)
    sh("ip", "link", "set", host_if, "up")


def ns_pids(ns: str) -> list[int]:
    proc = sh("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def delete_node_ns(n: int) -> None:
    delete_ns(ns_name(n))
    sh("ip", "link", "del", f"ap-lab-v{n}", check=False)


def delete_ns(ns: str) -> None:
    if ns in list_lab_namespaces():
        for pid in ns_pids(ns):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        sh("ip", "netns", "del", ns, check=False)


def list_lab_namespaces() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(NS_PREFIX)]


def _partition_rules(action: str) -> list[list[str]]:
    return [["iptables", action, "OUTPUT", "-d", CATALOG_IP, "-j", "DROP"],
            ["iptables", action, "INPUT", "-s", CATALOG_IP, "-j", "DROP"]]


def partition(n: int) -> None:
    """Cut node n off from the catalog (both directions); clients still reach it."""
    for rule in _partition_rules("-C"):
        if in_ns(n, *rule, check=False).returncode != 0:
            in_ns(n, *[("-A" if a == "-C" else a) for a in rule])


def heal(n: int) -> None:
    for rule in _partition_rules("-D"):
        while in_ns(n, *rule, check=False).returncode == 0:
            pass


def is_partitioned(n: int) -> bool:
    return in_ns(n, *_partition_rules("-C")[0], check=False).returncode == 0

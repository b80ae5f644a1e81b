"""Every interface's addresses, read from the kernel over rtnetlink: what ``getifaddrs``
(and so psutil) returns, without loading psutil (about 1 MB of a supervisor's memory).

One ``RTM_GETADDR`` dump on an ``AF_NETLINK`` socket lists every IPv4 and IPv6 address with
its interface index. The name follows glibc's ``getifaddrs``: an IPv4 address carries its
label (``eth0``, or ``eth0:1`` for an alias), an IPv6 address the name of its interface. For
IPv4 the local address (``IFA_LOCAL``) is taken, which differs from ``IFA_ADDRESS`` only on
a point-to-point link, where that one is the peer.
"""

from __future__ import annotations

import socket
import struct

RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
_HDR = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefix length, flags, scope, index
_RTA = struct.Struct("=HH")  # rtattr: length, type


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(buf: bytes, start: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while start + _RTA.size <= end:
        length, kind = _RTA.unpack_from(buf, start)
        if length < _RTA.size:
            break
        out[kind] = buf[start + _RTA.size:start + length]
        start += _align(length)
    return out


def addresses() -> list[tuple[str, int, str]]:
    """``(interface name, family, address text)`` for every IPv4 and IPv6 address, in the
    kernel's order. OSError when netlink cannot be used."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0) as sock:
        sock.bind((0, 0))
        request = (_HDR.pack(_HDR.size + _IFADDR.size, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP,
                             1, 0) + _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
        sock.send(request)
        names: dict[int, str] = {}
        out: list[tuple[str, int, str]] = []
        while True:
            buf = sock.recv(1 << 16)
            offset = 0
            while offset + _HDR.size <= len(buf):
                length, kind, _, _, _ = _HDR.unpack_from(buf, offset)
                if length < _HDR.size:
                    return out
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    (errno,) = struct.unpack_from("=i", buf, offset + _HDR.size)
                    if errno:
                        raise OSError(-errno, "netlink RTM_GETADDR failed")
                elif kind == RTM_NEWADDR:
                    family, _, _, _, index = _IFADDR.unpack_from(buf, offset + _HDR.size)
                    if family in (socket.AF_INET, socket.AF_INET6):
                        attrs = _attrs(buf, offset + _HDR.size + _IFADDR.size, offset + length)
                        raw = (attrs.get(IFA_LOCAL) if family == socket.AF_INET else None) \
                            or attrs.get(IFA_ADDRESS)
                        if raw:
                            label = attrs.get(IFA_LABEL)
                            if label:
                                name = label.split(b"\0", 1)[0].decode("utf-8", "replace")
                            else:
                                if index not in names:
                                    names[index] = socket.if_indextoname(index)
                                name = names[index]
                            out.append((name, family, socket.inet_ntop(family, raw)))
                offset += _align(length)

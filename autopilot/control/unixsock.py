"""Create the control socket safely: permissions set before anyone can connect, no clobbering.

The socket is bound under a temporary name in the same directory, given its mode and group,
put in listening state, and only then hard-linked to its final path. ``link`` fails if the
path exists, so two autopilots racing for one path cannot both win, and no client can ever
see the socket with the default (umask) permissions.
"""

from __future__ import annotations

import contextlib
import grp
import os
import socket
import stat

MAX_PATH = 107  # sun_path is 108 bytes including the terminating NUL


class ControlSocketError(RuntimeError):
    """The control socket cannot be created; the message says why and what to do."""


def _check_length(path: str) -> None:
    if len(os.fsencode(path)) > MAX_PATH:
        raise ControlSocketError(
            f"control socket path {path!r} is longer than {MAX_PATH} bytes (a unix socket limit)")


def resolve_gid(group: str | int) -> int:
    """A group name or number as a gid; a clear error when the group does not exist."""
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(str(group)).gr_gid
    except KeyError as exc:
        raise ControlSocketError(f"control.group {group!r}: no such group") from exc


def clear_stale(path: str) -> None:
    """Remove a socket file nobody listens on; refuse a live socket or a non-socket file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlSocketError(
            f"control socket path {path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # stale: left behind by a process that is gone
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ControlSocketError(f"cannot probe existing control socket {path}: {exc}") from exc
    finally:
        probe.close()
    raise ControlSocketError(
        f"control socket {path} is in use by another running process (another autopilot?); "
        "stop it or set control.socket to another path")


def bind(path: str, mode: int = 0o600, group: str | int | None = None,
         backlog: int = 128) -> socket.socket:
    """A listening AF_UNIX socket at ``path`` with ``mode``/``group`` already applied."""
    path = os.path.abspath(path)
    _check_length(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    gid = resolve_gid(group) if group is not None else None
    clear_stale(path)
    tmp = os.path.join(directory, f".autopilot-{os.getpid()}-{id(path) & 0xFFFF:x}.sock")
    _check_length(tmp)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Nobody can connect before listen(), so chmod/chown between bind and listen leave
        # no window with the umask's permissions (and the process-wide umask is untouched).
        sock.bind(tmp)
        try:
            if gid is not None:
                os.chown(tmp, -1, gid)
            os.chmod(tmp, mode)
            sock.listen(backlog)
            try:
                os.link(tmp, path)
            except FileExistsError:
                clear_stale(path)  # raises if live; else someone's stale file vanished
                os.link(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except ControlSocketError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        raise ControlSocketError(f"cannot create control socket {path}: {exc}") from exc
    sock.setblocking(False)
    return sock


def remove_if_ours(path: str, inode: int | None) -> None:
    """Unlink ``path`` only if it is still the socket we created (not a successor's)."""
    try:
        if inode is not None and os.lstat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass

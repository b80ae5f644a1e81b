"""Atomic file replacement: a reader sees the old file or the new one, never a mix."""

from __future__ import annotations

import grp
import os
import pwd
import tempfile


def _uid(owner: str | None) -> int:
    if owner in (None, ""):
        return -1
    return int(owner) if str(owner).isdigit() else pwd.getpwnam(str(owner)).pw_uid


def _gid(group: str | None) -> int:
    if group in (None, ""):
        return -1
    return int(group) if str(group).isdigit() else grp.getgrnam(str(group)).gr_gid


def write_if_changed(path: str, content: str | bytes, mode: int = 0o644,
                     owner: str | None = None, group: str | None = None) -> bool:
    """Write ``content`` to ``path`` unless it already holds exactly that; True if written.

    Temp file in the same directory (same filesystem), fsync, mode and owner set before the
    rename, rename over the old file, fsync of the directory so the rename survives a crash.
    """
    data = content.encode() if isinstance(content, str) else content
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    uid, gid = _uid(owner), _gid(group)  # unknown names fail before anything is written
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
        os.fchmod(fd, mode)
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd != -1:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return True

"""A tiny synchronous PostgreSQL client (protocol 3, simple queries; trust or SCRAM-SHA-256
authentication).

The lab's status table, the chaos workload and the failover benchmark talk to the lab's
PostgreSQL nodes with this, like resp.py for Redis, so `autopilot lab` needs no driver. One
socket, one statement at a time, a deadline on every call. Each statement runs in autocommit:
a reply to an INSERT means the commit was acknowledged (in sync mode: by a standby too).
The password is the `password` argument, else the environment's PGPASSWORD (like libpq),
so a lab started with PG_AUTH_METHOD=scram-sha-256 is observed and tested the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import socket
import struct


class PgError(Exception):
    """An ErrorResponse (or a refused authentication); `code` is the SQLSTATE."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class Postgres:
    def __init__(self, host: str, port: int, timeout: float = 1.0, user: str = "postgres",
                 database: str = "postgres", password: str | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.user, self.database = user, database
        self.password = password if password is not None else os.environ.get("PGPASSWORD")
        self._sock: socket.socket | None = None
        self._buf = b""

    def __enter__(self) -> Postgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.sendall(b"X\x00\x00\x00\x04")
            except OSError:
                pass
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buf = b""

    # ------------------------------------------------------------ wire
    def _recv(self, n: int) -> bytes:
        assert self._sock is not None
        while len(self._buf) < n:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _message(self) -> tuple[bytes, bytes]:
        kind = self._recv(1)
        (length,) = struct.unpack("!I", self._recv(4))
        return kind, self._recv(length - 4)

    @staticmethod
    def _error(body: bytes) -> PgError:
        fields = {}
        for part in body.split(b"\x00"):
            if part:
                fields[chr(part[0])] = part[1:].decode(errors="replace")
        return PgError(f"{fields.get('S', 'ERROR')}: {fields.get('M', '?')}", fields.get("C", ""))

    def connect(self) -> None:
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._sock.settimeout(self.timeout)
        try:
            self._startup()
        except BaseException:
            # a startup cut short (a timeout under load) must not leave its replies behind:
            # the next query would read the pending ReadyForQuery as its own success
            self.close()
            raise

    def _startup(self) -> None:
        assert self._sock is not None
        params = b"".join(k.encode() + b"\x00" + v.encode() + b"\x00" for k, v in
                          (("user", self.user), ("database", self.database),
                           ("application_name", "autopilot-lab"))) + b"\x00"
        body = struct.pack("!I", 196608) + params
        self._sock.sendall(struct.pack("!I", len(body) + 4) + body)
        while True:
            kind, payload = self._message()
            if kind == b"R":
                self._authenticate(payload)
            elif kind == b"E":
                raise self._error(payload)
            elif kind == b"Z":
                return

    # ------------------------------------------------------------ authentication
    def _send(self, kind: bytes, body: bytes) -> None:
        assert self._sock is not None
        self._sock.sendall(kind + struct.pack("!I", len(body) + 4) + body)

    def _authenticate(self, payload: bytes) -> None:
        """One Authentication* message: 0 ok, 10 SASL (SCRAM-SHA-256); others refused."""
        (code,) = struct.unpack("!I", payload[:4])
        if code == 0:
            return
        if code != 10:
            raise PgError(f"authentication method {code} is not supported "
                          "(trust and scram-sha-256 only)")
        if b"SCRAM-SHA-256" not in payload[4:].split(b"\x00"):
            raise PgError(f"no supported SASL mechanism in {payload[4:]!r}")
        if not self.password:
            raise PgError("the server asks for a password and none is set (PGPASSWORD)",
                          "28P01")
        self._scram(self.password)

    def _scram(self, password: str) -> None:
        """SCRAM-SHA-256 (RFC 5802/7677) without channel binding, as PostgreSQL speaks it:
        the user name in the exchange is empty (the startup packet names the user)."""
        nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        first_bare = f"n=,r={nonce}"
        first = ("n,," + first_bare).encode()
        self._send(b"p", b"SCRAM-SHA-256\x00" + struct.pack("!I", len(first)) + first)
        server_first = self._sasl_reply(11)
        attrs = dict(part.split("=", 1) for part in server_first.split(","))
        if not attrs.get("r", "").startswith(nonce):
            raise PgError("SCRAM: the server's nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(),
                                     base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        final_bare = f"c=biws,r={attrs['r']}"  # biws: base64 of the GS2 header "n,,"
        auth_message = f"{first_bare},{server_first},{final_bare}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._send(b"p", f"{final_bare},p={base64.b64encode(proof).decode()}".encode())
        server_final = self._sasl_reply(12)
        expected = hmac.digest(hmac.digest(salted, b"Server Key", "sha256"), auth_message,
                               "sha256")
        if not hmac.compare_digest(server_final, "v=" + base64.b64encode(expected).decode()):
            raise PgError("SCRAM: the server's signature does not match (not our server?)")

    def _sasl_reply(self, want: int) -> str:
        kind, payload = self._message()
        if kind == b"E":
            raise self._error(payload)
        (code,) = struct.unpack("!I", payload[:4])
        if kind != b"R" or code != want:
            raise PgError(f"SCRAM: unexpected message {kind!r} {code}")
        return payload[4:].decode()

    def query(self, sql: str, timeout: float | None = None) -> list[tuple[str | None, ...]]:
        """Run `sql` (one statement); the rows as tuples of text (None for NULL)."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._sock.settimeout(timeout or self.timeout)
        try:
            data = sql.encode() + b"\x00"
            self._sock.sendall(b"Q" + struct.pack("!I", len(data) + 4) + data)
            rows: list[tuple[str | None, ...]] = []
            error: PgError | None = None
            while True:
                kind, payload = self._message()
                if kind == b"D":
                    (count,) = struct.unpack("!H", payload[:2])
                    pos, row = 2, []
                    for _ in range(count):
                        (size,) = struct.unpack("!i", payload[pos:pos + 4])
                        pos += 4
                        if size < 0:
                            row.append(None)
                        else:
                            row.append(payload[pos:pos + size].decode())
                            pos += size
                    rows.append(tuple(row))
                elif kind == b"E":
                    error = self._error(payload)
                elif kind == b"Z":
                    if error is not None:
                        raise error
                    return rows
        except BaseException as exc:
            if not isinstance(exc, PgError):
                self.close()  # a half-read reply must not be read as the next one's
            raise

    def value(self, sql: str, timeout: float | None = None) -> str | None:
        rows = self.query(sql, timeout)
        return rows[0][0] if rows and rows[0] else None

"""autopilot.lab.pgwire against a scripted server on a real socket: rows, NULLs, errors,
and the bug it must never have again — a startup cut short by a timeout leaving its
ReadyForQuery behind for the next statement to read as its own success (the chaos prober
then saw a standby "accept" a write)."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from autopilot.lab.pgwire import PgError, Postgres

pytestmark = pytest.mark.timeout(20)


def msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


AUTH_OK = msg(b"R", struct.pack("!I", 0))
READY = msg(b"Z", b"I")


def error(text: str, code: str = "25006") -> bytes:
    return msg(b"E", b"SERROR\x00C" + code.encode() + b"\x00M" + text.encode() + b"\x00\x00")


def row(*vals: str | None) -> bytes:
    body = struct.pack("!H", len(vals))
    for v in vals:
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v.encode()
    return msg(b"D", body)


class Server:
    """Accepts connections; each gets `startup_delay` then AuthOk+Ready, then answers every
    query with `reply(sql)`."""

    def __init__(self, reply, startup_delay: float = 0.0) -> None:
        self.reply, self.delay = reply, startup_delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.queries: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn:
            try:
                (n,) = struct.unpack("!I", conn.recv(4))
                conn.recv(n - 4)
                time.sleep(self.delay)
                conn.sendall(AUTH_OK + READY)
                while True:
                    head = conn.recv(5)
                    if len(head) < 5 or head[:1] == b"X":
                        return
                    (n,) = struct.unpack("!I", head[1:])
                    sql = conn.recv(n - 4).rstrip(b"\x00").decode()
                    self.queries.append(sql)
                    conn.sendall(self.reply(sql) + READY)
            except OSError:
                return


def test_rows_nulls_and_errors() -> None:
    def reply(sql: str) -> bytes:
        if sql.startswith("insert"):
            return error("cannot execute INSERT in a read-only transaction")
        return row("1", None) + msg(b"C", b"SELECT 1\x00")

    srv = Server(reply)
    with Postgres("127.0.0.1", srv.port, timeout=2) as pg:
        assert pg.query("select 1, null") == [("1", None)]
        with pytest.raises(PgError) as exc:
            pg.query("insert into w values (1)")
        assert exc.value.code == "25006"
        assert pg.value("select 1") == "1"  # the connection is still in step


def test_a_startup_cut_short_is_never_read_as_a_success() -> None:
    srv = Server(lambda sql: error("read-only"), startup_delay=0.4)
    pg = Postgres("127.0.0.1", srv.port, timeout=0.1)
    with pytest.raises(OSError):  # the startup's reply comes after our deadline
        pg.query("insert into w values (1)")
    time.sleep(0.5)  # the late AuthOk + ReadyForQuery have arrived on that old socket
    pg.timeout = 2.0
    with pytest.raises(PgError):  # a fresh connection, and the server's real answer
        pg.query("insert into w values (2)")
    pg.close()

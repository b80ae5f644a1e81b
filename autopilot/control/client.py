"""A synchronous client for the control socket.

Used by `autopilot ctl …`, `autopilot reload` and the `containerpilot` flag shim. It is
deliberately stdlib-only (http.client over an AF_UNIX socket): a client command must start
fast and needs nothing but the socket path. Every failure (no socket, nobody listening, a
timeout, a 4xx/5xx answer) is raised as ``ControlError`` carrying a human-readable message;
for an HTTP error that is the server's JSON ``{"error": …}`` text.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import quote

DEFAULT_SOCKET = "/var/run/containerpilot.socket"


class ControlError(Exception):
    """A control request failed; ``status`` is the HTTP code, or None for a transport error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    """An HTTPConnection that dials a unix socket instead of a TCP host."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("control", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ControlClient:
    """One method per control route; each returns the decoded JSON answer or raises."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    # -- transport -------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None,
                timeout: float | None = None) -> Any:
        """Send one request; return the JSON body (or None when empty); raise ControlError."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Connection": "close"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn = _UnixConnection(self.socket_path, timeout or self.timeout)
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
        except FileNotFoundError as exc:
            raise ControlError(f"control socket {self.socket_path} does not exist "
                               "(is autopilot running?)") from exc
        except ConnectionRefusedError as exc:
            raise ControlError(f"nobody is listening on control socket {self.socket_path} "
                               "(is autopilot running?)") from exc
        except PermissionError as exc:
            raise ControlError(f"permission denied on control socket {self.socket_path}") from exc
        except TimeoutError as exc:
            raise ControlError(f"control request {method} {path} timed out") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ControlError(f"control request {method} {path} failed: {exc}") from exc
        finally:
            conn.close()
        data = _decode(raw)
        if status >= 400:
            msg = data.get("error") if isinstance(data, dict) else None
            raise ControlError(msg or f"HTTP {status} from {path}", status=status)
        return data

    # -- routes ----------------------------------------------------------------------------
    def ping(self) -> dict:
        return self.request("GET", "/v3/ping") or {}

    def reload(self) -> dict:
        return self.request("POST", "/v3/reload", timeout=max(self.timeout, 120.0)) or {}

    def maintenance(self, enabled: bool) -> dict:
        return self.request("POST", f"/v3/maintenance/{'enable' if enabled else 'disable'}") or {}

    def putenv(self, env: dict[str, str]) -> dict:
        return self.request("POST", "/v3/environ", env) or {}

    def putmetric(self, metrics: dict[str, Any]) -> dict:
        return self.request("POST", "/v3/metric", metrics) or {}

    def status(self) -> dict:
        return self.request("GET", "/v3/status") or {}

    def job(self, name: str, action: str, signal: str | None = None) -> dict:
        body = {"signal": signal} if action == "signal" else None
        return self.request("POST", f"/v3/jobs/{quote(name, safe='')}/{quote(action, safe='')}", body,
                            timeout=max(self.timeout, 60.0)) or {}


def _decode(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"error": text}

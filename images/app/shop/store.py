"""Redis operations; in no-loss mode a write counts only once a replica has it."""

from __future__ import annotations

import threading

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shop.primary import Primary, PrimarySource
from shop.settings import Settings


class Unavailable(Exception):
    """The write or read could not be done safely; the HTTP layer answers 503."""


class Store:
    def __init__(self, settings: Settings, source: PrimarySource) -> None:
        self.settings = settings
        self.source = source
        self._lock = threading.Lock()
        self._clients: dict[Primary, redis.Redis] = {}

    def _client(self) -> tuple[Primary, redis.Redis]:
        primary = self.source.current()
        if primary is None:
            raise Unavailable("no Redis primary known (yet)")
        key = Primary(primary.host, primary.port)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                # one pool per address: a failover switches pools, never mixes them
                for old in self._clients.values():
                    old.close()
                self._clients = {}
                t = self.settings.redis_timeout
                # no retries: a retried INCR could count twice, and a dead primary must
                # answer within one timeout; the HTTP client retries instead
                client = redis.Redis(host=key.host, port=key.port, socket_timeout=t,
                                     socket_connect_timeout=t, decode_responses=True,
                                     retry=Retry(NoBackoff(), 0))
                self._clients[key] = client
        return primary, client

    def _write(self, fn) -> tuple[object, Primary]:  # noqa: ANN001 - fn(pipeline-less client)
        primary, client = self._client()
        try:
            result = fn(client)
            if self.settings.no_loss:
                acked = client.execute_command("WAIT", 1, self.settings.wait_ms)
                if int(acked) < 1:
                    raise Unavailable("write not acknowledged by a replica (no-loss mode)")
        except redis.exceptions.ReadOnlyError as exc:
            raise Unavailable(f"{primary.host}:{primary.port} is no longer the primary") from exc
        except redis.exceptions.ResponseError as exc:
            # NOREPLICAS / MASTERDOWN / paused writes: the node refuses, the client must retry
            raise Unavailable(f"redis refused the write: {exc}") from exc
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise Unavailable(f"redis {primary.host}:{primary.port} unreachable: {exc}") from exc
        return result, primary

    def _read(self, fn) -> tuple[object, Primary]:  # noqa: ANN001
        primary, client = self._client()
        try:
            return fn(client), primary
        except redis.exceptions.RedisError as exc:
            raise Unavailable(f"redis {primary.host}:{primary.port}: {exc}") from exc

    def visit(self) -> tuple[int, Primary]:
        value, primary = self._write(lambda c: c.incr("shop:visits"))
        return int(value), primary

    def visits(self) -> tuple[int, Primary]:
        value, primary = self._read(lambda c: c.get("shop:visits"))
        return int(value or 0), primary

    def add_to_cart(self, user: str, item: str, qty: int) -> tuple[dict[str, int], Primary]:
        key = f"shop:cart:{user}"
        _, primary = self._write(lambda c: c.hincrby(key, item, qty))
        cart, _ = self.cart(user)
        return cart, primary

    def cart(self, user: str) -> tuple[dict[str, int], Primary]:
        raw, primary = self._read(lambda c: c.hgetall(f"shop:cart:{user}"))
        return {k: int(v) for k, v in sorted(raw.items())}, primary

    def clear_cart(self, user: str) -> Primary:
        _, primary = self._write(lambda c: c.delete(f"shop:cart:{user}"))
        return primary

"""Settings from the environment only (factor III), read once at start."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    port: int = 8000
    bind: str = "0.0.0.0"
    #: JSON file naming the Redis primary, rendered by autopilot from the catalog
    redis_file: str = "/run/shop/redis.json"
    #: fixed Redis address, used when no file is configured or it names no primary
    redis_host: str | None = None
    redis_port: int = 6379
    redis_timeout: float = 1.0
    #: no-loss mode: every write waits for one replica (`WAIT 1 <wait_ms>`) or fails
    no_loss: bool = False
    wait_ms: int = 500
    instance: str = ""


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings; a bad number fails fast with the variable's name."""
    env = os.environ if env is None else env

    def num(name: str, default: str, kind: type = int):  # noqa: ANN202 - tiny local helper
        raw = env.get(name, default)
        try:
            return kind(raw)
        except ValueError:
            raise SystemExit(f"shop: {name}={raw!r} is not a valid {kind.__name__}") from None

    return Settings(
        port=num("PORT", "8000"),
        bind=env.get("BIND", "0.0.0.0"),
        redis_file=env.get("REDIS_SETTINGS_FILE", "/run/shop/redis.json"),
        redis_host=env.get("REDIS_HOST") or None,
        redis_port=num("REDIS_PORT", "6379"),
        redis_timeout=num("REDIS_TIMEOUT", "1.0", float),
        no_loss=_flag(env.get("SHOP_NO_LOSS")),
        wait_ms=num("SHOP_WAIT_MS", "500"),
        instance=env.get("INSTANCE_NAME") or socket.gethostname(),
    )

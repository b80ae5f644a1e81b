"""`python -m shop`: serve until SIGTERM/SIGINT, then finish in-flight requests and exit 0."""

from __future__ import annotations

import signal
import sys
import threading

from shop.primary import PrimarySource
from shop.server import ShopServer
from shop.settings import from_env
from shop.store import Store


def main() -> int:
    settings = from_env()
    server = ShopServer(settings, Store(settings, PrimarySource(settings)))
    mode = "no-loss (WAIT 1)" if settings.no_loss else "async"
    print(f"shop: {settings.instance} listening on {settings.bind}:{settings.port}, "
          f"redis from {settings.redis_file} (fallback {settings.redis_host}:{settings.redis_port}),"
          f" {mode} writes", flush=True)

    def stop(signum: int, _frame: object) -> None:
        print(f"shop: {signal.Signals(signum).name}, shutting down", flush=True)
        # shutdown() blocks until serve_forever returns: call it off the main thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    print("shop: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

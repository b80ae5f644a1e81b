"""shop: a small twelve-factor web service (a visit counter and shopping carts in Redis).

Config comes only from the environment (`shop.settings`), state lives only in Redis, logs go
to stdout, and the process starts in milliseconds and stops cleanly on SIGTERM. Where Redis is
comes from a small JSON file that autopilot renders from the catalog and rewrites on failover;
the app re-reads it whenever it changes, so it always writes to the current primary.
"""

"""The embedded Consul-compatible catalog (`autopilot catalog`).

A single-node stand-in for `consul agent -dev`: agent services and checks, health and catalog
reads, KV, sessions and locks, blocking queries, all in memory (optionally persisted with
``--data-dir``). Meant for development, tests and the workshop; production uses real Consul.
"""

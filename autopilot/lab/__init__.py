"""`autopilot lab`: a whole autopilot-run Redis or PostgreSQL cluster on one machine, and its
fault actions.

The lab starts the embedded catalog and N nodes, each an autopilot supervising its own
`redis-server` or PostgreSQL server (`services.py`: `autopilot lab up redis|postgres`). As
root every node gets its own network namespace (a veth on the bridge `ap-lab-br0`) and its
own PID namespace with autopilot as PID 1; otherwise nodes share loopback with distinct
ports. See docs/workshop/01-redis-lab.md and docs/workshop/06-postgres.md.
"""

"""Jobs: the state machine (job.py), processes (process.py) and health checks (health.py)."""

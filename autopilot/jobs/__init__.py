"""Jobs: the state machine (job.py) with its runs (runs.py) and its ending (ending.py),
processes (process.py), health checks (health.py), the one hook runner (hooks.py)."""

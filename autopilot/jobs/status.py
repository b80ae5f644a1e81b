"""A job's status, one type for the job, its health checker and what reads them."""

from typing import Literal

#: a job's status, as `autopilot ctl status`, /status and /ready show it: "unknown" until
#: the first check (or for a job without one), "healthy"/"unhealthy" after each check,
#: "maintenance" while maintenance mode is on, "stopped" once the job has stopped
JobStatus = Literal["unknown", "healthy", "unhealthy", "maintenance", "stopped"]

"""The ``function`` block of a job (autopilot; the runtime is ``autopilot.jobs.function``).

A function job answers on ``port`` while no handler runs: autopilot holds the socket,
registers it in the catalog at once (``initial_status`` defaults to passing, blind TTL
heartbeats), and starts ``exec`` on the first connection. Keys that make no sense for a
handler started on demand are refused with the reason, so a mistake is never silent.
"""

from __future__ import annotations

from typing import Any

from autopilot.config import coerce
from autopilot.config.coerce import show
from autopilot.config.json5parse import Path
from autopilot.config.model import FunctionConfig, HealthConfig, JobConfig
from autopilot.config.validate.base import ValidatorBase

FUNCTION_KEYS = ["idleTimeout", "maxConcurrency", "bind", "backlog", "fdName"]
#: heartbeats of a function's catalog entry when the job has no `health` block
HEARTBEAT = 5.0
HEARTBEAT_TTL = 15.0


class FunctionSection(ValidatorBase):
    def function(self, raw: Any, path: Path) -> FunctionConfig | None:
        """``function: true`` or ``function: {idleTimeout, maxConcurrency, bind, backlog,
        fdName}``; ``false`` switches it off."""
        if raw is False:
            return None
        if raw is True:
            return FunctionConfig()
        f = self.fields(path, raw, FUNCTION_KEYS)
        if f is None:
            return None
        cfg = FunctionConfig()
        cfg.idle_timeout = self.take(f, "idleTimeout", coerce.to_duration, cfg.idle_timeout)
        if cfg.idle_timeout <= 0:
            self.error(f["idleTimeout"][1], "must be > 0 (a handler is stopped after this long "
                                         "without a connection)")
        cfg.max_concurrency = self.take(f, "maxConcurrency", coerce.to_int, cfg.max_concurrency)
        if cfg.max_concurrency < 1:
            self.error(f["maxConcurrency"][1], "must be >= 1")
        cfg.backlog = self.take(f, "backlog", coerce.to_int, cfg.backlog)
        if not 1 <= cfg.backlog <= 65535:
            self.error(f["backlog"][1], "must be between 1 and 65535")
        bind = self.take(f, "bind", coerce.to_nonempty_str, cfg.bind)
        import ipaddress  # only for function jobs (270 KB otherwise)

        try:
            ipaddress.ip_address(bind)
        except ValueError:
            self.error(f["bind"][1], f"{show(bind)} is not an IP address")
        else:
            cfg.bind = bind
        name = self.take(f, "fdName", coerce.to_nonempty_str, "")
        if name and (":" in name or len(name) > 255 or not name.isprintable()):
            self.error(f["fdName"][1], "must be printable, without ':' and at most 255 characters "
                                    "(systemd's rule for LISTEN_FDNAMES)")
        else:
            cfg.fd_name = name
        return cfg


    def function_job(self, job: JobConfig, f: dict[str, tuple[Any, Path]], path: Path) -> None:
        """Cross-checks of a job whose ``function`` is set, and its defaults (health, status)."""
        fn = job.function
        if fn is None:
            return
        if not fn.fd_name:
            fn.fd_name = job.name
        if not job.exec:
            self.error(path, "a function needs 'exec' (the handler started on the first connection)")
        if not job.port:
            self.error(path, "a function needs 'port' (autopilot listens on it for the handler)")
        if "when" in f:
            self.error(f["when"][1], "a function starts on its first connection, not on an event: "
                                  "remove 'when'")
        if job.health is not None and job.health.exec is not None:
            self.error(f["health"][1], "a function has no health 'exec': it is healthy while "
                                    "autopilot holds its socket, and a check would start the "
                                    "handler and keep it from scaling to zero")
        if job.health is None:
            job.health = HealthConfig(interval=HEARTBEAT, ttl=HEARTBEAT_TTL)
        if job.initial_status is None:
            job.initial_status = "passing"  # registered at once: it answers at zero instances

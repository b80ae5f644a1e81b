"""A job's `election`: the lock, its session and the hooks that promote and demote."""

from __future__ import annotations

from typing import Any

from autopilot.config import coerce
from autopilot.config.json5parse import Path
from autopilot.config.model import (
    ElectionConfig,
    JobConfig,
)
from autopilot.config.validate.base import ValidatorBase
from autopilot.durations import format_duration


class ElectionSection(ValidatorBase):
    def election(self, raw: Any, path: Path, job: JobConfig) -> ElectionConfig | None:
        if raw is False:
            return None
        cfg = ElectionConfig()
        if raw is True:
            raw = {}
        f = self.fields(path, raw, ["key", "sessionTTL", "lockDelay", "renewInterval",
                                    "primaryTag", "replicaTag", "promote", "demote",
                                    "hookTimeout", "identity", "position", "detach", "successor",
                                    "maximumLagOnFailover", "candidacyTimeout", "stateDir",
                                    "noLeaderTolerance"])
        if f is None:
            return None
        cfg.key = self.take(f, "key", coerce.to_nonempty_str) or \
            (f"service/{job.name}/leader" if job.name else None)
        cfg.session_ttl = self.take(f, "sessionTTL", coerce.to_duration, 10.0)
        if not 10 <= cfg.session_ttl <= 86400:
            self.error(self.path_of(f, "sessionTTL", path),
                       "must be between 10s and 24h (Consul's limits)")
        cfg.lock_delay = self.take(f, "lockDelay", coerce.to_duration, 1.0)
        if not 0 <= cfg.lock_delay <= 60:
            self.error(self.path_of(f, "lockDelay", path), "must be between 0s and 60s")
        renew = self.take(f, "renewInterval", coerce.to_duration)
        if renew is not None and not 0 < renew < cfg.session_ttl:
            self.error(f["renewInterval"][1], f"must be > 0 and shorter than sessionTTL "
                                              f"({format_duration(cfg.session_ttl)})")
        cfg.renew_interval = renew if renew else cfg.session_ttl / 3
        cfg.primary_tag = self.take(f, "primaryTag", coerce.to_nonempty_str, "primary")
        cfg.replica_tag = self.take(f, "replicaTag", coerce.to_nonempty_str, "replica")
        if cfg.primary_tag == cfg.replica_tag:
            self.error(path, "primaryTag and replicaTag must differ")
        cfg.promote = self.take(f, "promote", coerce.to_exec)
        cfg.demote = self.take(f, "demote", coerce.to_exec)
        cfg.hook_timeout = self.take(f, "hookTimeout", coerce.to_duration, 10.0)
        self.positive(f, "hookTimeout", path, cfg.hook_timeout)
        # data safety (docs/stateful.md#data-safety)
        cfg.identity = self.take(f, "identity", coerce.to_exec)
        cfg.position = self.take(f, "position", coerce.to_exec)
        cfg.detach = self.take(f, "detach", coerce.to_exec)
        cfg.successor = self.take(f, "successor", coerce.to_exec)
        cfg.maximum_lag_on_failover = self.take(f, "maximumLagOnFailover", coerce.to_int, 0)
        if cfg.maximum_lag_on_failover is not None and cfg.maximum_lag_on_failover < 0:
            self.error(f["maximumLagOnFailover"][1], "must be >= 0 (bytes; 0: no limit)")
        cfg.candidacy_timeout = self.take(f, "candidacyTimeout", coerce.to_duration, 2.0)
        if cfg.candidacy_timeout is not None and not 0 <= cfg.candidacy_timeout <= 60:
            self.error(self.path_of(f, "candidacyTimeout", path), "must be between 0s and 60s")
        cfg.state_dir = self.take(f, "stateDir", coerce.to_nonempty_str)
        tolerance = self.take(f, "noLeaderTolerance", coerce.to_duration)
        if tolerance is not None and not 0 <= tolerance <= cfg.session_ttl:
            self.error(f["noLeaderTolerance"][1], f"must be between 0s and sessionTTL "
                                                  f"({format_duration(cfg.session_ttl)})")
        cfg.no_leader_tolerance = tolerance
        return cfg

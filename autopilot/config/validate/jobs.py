"""A job: its process, service fields, restarts and environment (the parts with their own
sections, `health`, `when` and `election`, are validated in their own modules)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from autopilot.config import coerce
from autopilot.config.coerce import Invalid, show
from autopilot.config.json5parse import Path
from autopilot.config.model import (
    UNLIMITED,
    BackoffConfig,
    JobConfig,
    JobConsulConfig,
)
from autopilot.config.validate.base import NAME_RE, ValidatorBase
from autopilot.durations import format_duration, parse_go_duration

STATUSES = ("passing", "warning", "critical")
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-@]{1,15}$")
_META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")
JOB_KEYS = ["name", "exec", "port", "initial_status", "interfaces", "tags", "meta", "consul",
            "health", "when", "timeout", "stopTimeout", "stopSignal", "restarts",
            "restartBackoff", "logging", "env", "user", "group", "workdir", "election",
            "function"]


class JobSection(ValidatorBase):
    def job(self, raw: Any, path: Path) -> JobConfig | None:
        f = self.fields(path, raw, JOB_KEYS)
        if f is None:
            return None
        name = self.take(f, "name", coerce.to_str, "")
        if "name" not in f or not name:
            self.error(self.path_of(f, "name", path), "is required" if "name" not in f
                       else "must not be empty")
        job = JobConfig(name=name)
        job.exec = self.take(f, "exec", coerce.to_exec)
        job.port = self.take(f, "port", coerce.to_port, 0)
        if job.port and name and not NAME_RE.match(name):
            self.error(self.path_of(f, "name", path),
                       f"{show(name)} is not a valid service name: it must start with a "
                       "lower-case letter and contain only letters, digits and dashes "
                       "(2 characters at least)")
        # initial_status and interfaces only matter for a registered job (ContainerPilot
        # checked them only then); elsewhere a bad value is a warning, not an error
        report = self.error if job.port else self.warn
        status = self.take(f, "initial_status", coerce.to_str)
        if status:
            if status not in STATUSES:
                report(f["initial_status"][1], f"must be one of \"passing\", \"warning\", "
                                               f"\"critical\", got {show(status)}")
            else:
                job.initial_status = status  # type: ignore[assignment]
        if "interfaces" in f:
            job.interfaces = self.interfaces(*f["interfaces"], report=report)
        job.tags = self.take(f, "tags", coerce.to_str_list, [])
        if "meta" in f:
            job.meta = self.meta(*f["meta"])
        if "consul" in f:
            job.consul = self.job_consul(*f["consul"])
        if "health" in f:
            job.health = self.health(*f["health"])
        if "function" in f:
            job.function = self.function(*f["function"])
            self.function_job(job, f, path)
        if job.port and job.health is None and "health" not in f:
            self.error(path, "health must be set if 'port' is set (Consul needs a TTL check)")
        if "when" in f:
            job.when = self.when(*f["when"])
        job.timeout = self.take(f, "timeout", coerce.to_duration)
        if job.timeout is not None and job.timeout < 0.001:
            if job.timeout == 0:
                job.timeout = None  # 0 means no timeout
            else:
                self.error(f["timeout"][1], "must be at least 1ms")
        if job.timeout is None and job.when.interval is not None:
            job.timeout = job.when.interval
        job.stop_timeout = self.take(f, "stopTimeout", coerce.to_duration, 5.0)
        if job.stop_timeout < 0:
            self.error(f["stopTimeout"][1], "must be >= 0")
        job.stop_signal = self.take(f, "stopSignal", coerce.to_signal, "SIGTERM")
        job.restarts = self.restarts(f, job, path)
        if "restartBackoff" in f:
            job.backoff = self.backoff(*f["restartBackoff"])
        if "logging" in f:
            lf = self.fields(f["logging"][1], f["logging"][0], ["raw"])
            if lf is not None:
                job.logging_raw = self.take(lf, "raw", coerce.to_bool, False)
        if "env" in f:
            job.env = self.env(*f["env"])
        job.user = self.take(f, "user", coerce.to_nonempty_str)
        job.group = self.take(f, "group", coerce.to_nonempty_str)
        job.workdir = self.take(f, "workdir", coerce.to_nonempty_str)
        if "election" in f:
            job.election = self.election(*f["election"], job)
        return job

    def interfaces(self, raw: Any, path: Path,
                   report: Callable[[Path, str], None] | None = None) -> list[str]:
        report = report or self.error
        try:
            specs = coerce.to_str_list(raw)
        except Invalid as exc:
            report(path, str(exc))
            return ["eth0:inet", "inet"]
        for i, spec in enumerate(specs):
            problem = interface_spec_problem(spec)
            if problem:
                report((*path, i) if isinstance(raw, list) else path, problem)
        return specs

    def meta(self, raw: Any, path: Path) -> dict[str, str]:
        try:
            meta = coerce.to_str_map(raw)
        except Invalid as exc:
            self.error(path, str(exc))
            return {}
        if len(meta) > 64:
            self.error(path, f"at most 64 keys are allowed (Consul), got {len(meta)}")
        for k, v in meta.items():
            if not _META_KEY.match(k) or len(k) > 128:
                self.error((*path, k), "keys may contain only letters, digits, '-' and '_' "
                                       "(at most 128 characters)")
            elif k.startswith("consul-"):
                self.error((*path, k), 'the "consul-" prefix is reserved by Consul')
            if len(v) > 512:
                self.error((*path, k), "values are limited to 512 characters (Consul)")
        return meta

    def job_consul(self, raw: Any, path: Path) -> JobConsulConfig | None:
        f = self.fields(path, raw, ["enableTagOverride", "deregisterCriticalServiceAfter"])
        if f is None:
            return None
        cfg = JobConsulConfig(enable_tag_override=self.take(f, "enableTagOverride",
                                                            coerce.to_bool, False))
        dcsa = self.take(f, "deregisterCriticalServiceAfter", coerce.to_str)
        if dcsa:
            if dcsa.strip().isdigit():
                dcsa = f"{int(dcsa)}s"
            try:
                parse_go_duration(dcsa)
                cfg.deregister_critical_service_after = dcsa.strip()
            except ValueError as exc:
                self.error(f["deregisterCriticalServiceAfter"][1], str(exc))
        return cfg

    def restarts(self, f: dict, job: JobConfig, path: Path) -> int:
        default = UNLIMITED if job.when.interval is not None else 0
        if "restarts" not in f:
            return default
        raw, rpath = f["restarts"]
        value: int
        if isinstance(raw, str) and raw.strip().lower() in ("unlimited", "never"):
            value = UNLIMITED if raw.strip().lower() == "unlimited" else 0
        else:
            try:
                value = coerce.to_int(raw)
            except Invalid:
                self.error(rpath, f'must be "unlimited", "never" or a number >= 0, got {show(raw)}')
                return default
            if value < 0:
                self.error(rpath, f"must be >= 0, got {value}")
                return default
        if value == UNLIMITED and job.when.each is not None:
            self.error(rpath, "'unlimited' cannot be combined with when.each (each event "
                              "already starts the job)")
        return value

    def backoff(self, raw: Any, path: Path) -> BackoffConfig:
        cfg = BackoffConfig()
        f = self.fields(path, raw, ["initial", "max", "resetAfter"])
        if f is None:
            return cfg
        cfg.initial = self.take(f, "initial", coerce.to_duration, 0.0)
        cfg.max = self.take(f, "max", coerce.to_duration, max(cfg.initial, 60.0)
                            if cfg.initial > 0 else 0.0)
        cfg.reset_after = self.take(f, "resetAfter", coerce.to_duration, 60.0)
        for key in ("initial", "max", "resetAfter"):
            v = getattr(cfg, "reset_after" if key == "resetAfter" else key)
            if v < 0:
                self.error(f[key][1], "must be >= 0")
        if cfg.max < cfg.initial:
            self.error(self.path_of(f, "max", path), f"must be >= initial "
                                                     f"({format_duration(cfg.initial)})")
        return cfg

    def env(self, raw: Any, path: Path) -> dict[str, str]:
        try:
            env = coerce.to_str_map(raw)
        except Invalid as exc:
            self.error(path, str(exc))
            return {}
        for k, v in env.items():
            if not k or "=" in k or "\0" in k:
                self.error((*path, k), "a variable name must be non-empty and contain no '='")
            if "\0" in v:
                self.error((*path, k), "values cannot contain NUL")
        return env


def interface_spec_problem(spec: str) -> str | None:
    """Why an interface spec is malformed, or None. Nothing is resolved here: a config
    must load on a machine that lacks the interface (discovery resolves at registration)."""
    s = spec.strip()
    if s in ("inet", "inet6"):
        return None
    if s.startswith("static:") or "/" in s:
        import ipaddress  # only for a static address or a CIDR (270 KB otherwise)
    if s.startswith("static:"):
        try:
            ipaddress.ip_address(s[len("static:"):])
        except ValueError:
            return f"invalid static address in {show(spec)}"
        return None
    if "/" in s:
        try:
            ipaddress.ip_network(s, strict=False)
        except ValueError:
            return f"invalid CIDR {show(spec)}"
        return None
    m = re.match(r"^([^\[\]:]+)\[(\d+)\]$", s)
    if m:
        name = m.group(1)
    else:
        name, sep, family = s.partition(":")
        if sep and family not in ("inet", "inet6"):
            return f'invalid interface spec {show(spec)}: the family must be "inet" or "inet6"'
    if not _IFNAME.match(name):
        return (f"invalid interface spec {show(spec)} (expected a name like \"eth0\", "
                "\"eth0:inet6\", \"eth0[1]\", a CIDR, \"inet\", \"inet6\" or \"static:IP\")")
    return None

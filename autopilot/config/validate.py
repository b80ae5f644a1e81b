"""Raw JSON (a dict) -> the typed ``Config``, with every problem collected, not just the first.

Rules follow ContainerPilot v3's decoder and validators (see docs/configuration.md),
plus autopilot's extensions. Keys match case-insensitively, like mapstructure. Each error
names the field path (``jobs[2].health.interval``) and, when known, the line it is on.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from autopilot.config import coerce
from autopilot.config.coerce import Invalid, show
from autopilot.config.durations import format_duration, parse_go_duration
from autopilot.config.json5parse import Path
from autopilot.config.model import (
    UNLIMITED,
    BackoffConfig,
    Config,
    ConsulConfig,
    ControlConfig,
    ElectionConfig,
    HealthConfig,
    JobConfig,
    JobConsulConfig,
    LoggingConfig,
    MetricConfig,
    ReadinessConfig,
    TelemetryConfig,
    TemplateConfig,
    TLSConfig,
    WatchConfig,
    WhenConfig,
)
from autopilot.events import SIGNAL, SIGNAL_SOURCES, TRIGGER_CODES

T = TypeVar("T")

#: ContainerPilot's rule for service and watch names
NAME_RE = re.compile(r"^[a-z][a-zA-Z0-9\-]+$")
GLOBAL_CODES = frozenset({"startup", "shutdown", "enterMaintenance", "exitMaintenance"})
LOG_LEVELS = {"DEBUG", "INFO", "WARN", "ERROR", "FATAL", "PANIC"}
LOG_FORMATS = {"default", "text", "json"}
STATUSES = ("passing", "warning", "critical")
METRIC_TYPES = ("counter", "gauge", "histogram", "summary")
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-@]{1,15}$")
_METRIC_PART = re.compile(r"^[a-zA-Z0-9_:]*$")
_META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")

TOP_KEYS = ["consul", "logging", "stopTimeout", "jobs", "watches", "telemetry", "control",
            "templates", "mainJob"]
JOB_KEYS = ["name", "exec", "port", "initial_status", "interfaces", "tags", "meta", "consul",
            "health", "when", "timeout", "stopTimeout", "stopSignal", "restarts",
            "restartBackoff", "logging", "env", "user", "group", "workdir", "election"]

_MISSING = object()


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


class Validator:
    """Walks the raw config once, building the model and collecting errors/warnings."""

    def __init__(self, filename: str, positions: dict[Path, tuple[int, int]] | None = None):
        self.filename = filename
        #: relative template sources are taken from the config file's directory
        self.base_dir = os.path.dirname(os.path.abspath(filename)) \
            if filename and not filename.startswith("<") else ""
        self.positions = positions or {}
        self.errors: list[str] = []
        self.warnings: list[str] = []
        #: id(built object) -> its path as written, e.g. ("jobs", 3)
        self.origin: dict[int, Path] = {}

    # -- reporting ---------------------------------------------------------------
    def _locate(self, path: Path) -> str:
        p = path
        while p not in self.positions and p:
            p = p[:-1]
        pos = self.positions.get(p)
        return f"{self.filename}:{pos[0]}" if pos else self.filename

    def _line(self, path: Path, msg: str, at: Path | None = None) -> str:
        where = format_path(path)
        return f"{self._locate(path if at is None else at)}: {where + ': ' if where else ''}{msg}"

    def error(self, path: Path, msg: str, at: Path | None = None) -> None:
        """Record a problem with the field at ``path`` (its line is looked up at ``at``)."""
        self.errors.append(self._line(path, msg, at))

    def warn(self, path: Path, msg: str) -> None:
        self.warnings.append(self._line(path, msg))

    # -- reading objects -----------------------------------------------------------
    def fields(self, path: Path, raw: Any, allowed: list[str]) -> dict[str, tuple[Any, Path]] | None:
        """The object's members by canonical key -> (value, path as written); unknown keys
        are reported together. ``null`` members count as absent."""
        if not isinstance(raw, dict):
            self.error(path, f"expected an object, got {show(raw)}")
            return None
        lower = {k.lower(): k for k in allowed}
        out: dict[str, tuple[Any, Path]] = {}
        unknown = []
        for key, value in raw.items():
            canon = key if key in allowed else lower.get(key.lower())
            if canon is None:
                unknown.append(key)
                continue
            if value is not None:
                out[canon] = (value, (*path, key))
        if unknown:
            names = ", ".join(f'"{k}"' for k in unknown)
            msg = f"unknown keys: [{names}]" if path else f"unknown config keys: [{names}]"
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, allowed, n=1, cutoff=0.6)
                if close:
                    hints.append(f'"{k}" -> "{close[0]}"')
            if hints:
                msg += f" (did you mean {', '.join(hints)}?)"
            self.error(path, msg, at=(*path, unknown[0]))
        return out

    def take(self, f: dict[str, tuple[Any, Path]], key: str, conv: Callable[[Any], T],
             default: Any = None) -> Any:
        if key not in f:
            return default
        value, path = f[key]
        try:
            return conv(value)
        except Invalid as exc:
            self.error(path, str(exc))
            return default

    def path_of(self, f: dict[str, tuple[Any, Path]], key: str, parent: Path) -> Path:
        return f[key][1] if key in f else (*parent, key)

    def positive(self, f: dict, key: str, parent: Path, value: float | None,
                 what: str = "must be > 0") -> None:
        if value is not None and value <= 0:
            self.error(self.path_of(f, key, parent), what)

    # -- top level -----------------------------------------------------------------
    def config(self, raw: Any, path: str) -> Config:
        cfg = Config(path=path)
        f = self.fields((), raw, TOP_KEYS)
        if f is None:
            return cfg
        cfg.consul = self.consul(f)
        if "logging" in f:
            cfg.logging = self.logging(*f["logging"])
        stop = self.take(f, "stopTimeout", coerce.to_duration, 0.0)
        if stop < 0:
            self.error(f["stopTimeout"][1], "must be >= 0")
        cfg.stop_timeout = stop if stop > 0 else 5.0
        if "jobs" in f:
            cfg.jobs = self.each(f["jobs"], self.job)
        if "watches" in f:
            cfg.watches = self.each(f["watches"], self.watch)
        if "telemetry" in f:
            cfg.telemetry = self.telemetry(*f["telemetry"], cfg)
        if "control" in f:
            cfg.control = self.control(*f["control"])
        if "templates" in f:
            cfg.templates = self.each(f["templates"], self.template)
        cfg.main_job = self.take(f, "mainJob", coerce.to_nonempty_str)
        self.cross_checks(cfg, f)
        return cfg

    def each(self, entry: tuple[Any, Path], build: Callable[[Any, Path], T | None]) -> list[T]:
        raw, path = entry
        if not isinstance(raw, list):
            if isinstance(raw, dict):
                raw = [raw]  # mapstructure: a single value where a list is expected
                self.positions.setdefault((*path, 0), self.positions.get(path, (0, 0)))
            else:
                self.error(path, f"expected an array, got {show(raw)}")
                return []
        out = []
        for i, item in enumerate(raw):
            if item is None:
                continue  # ContainerPilot drops null items too
            built = build(item, (*path, i))
            if built is not None:
                out.append(built)
                self.origin[id(built)] = (*path, i)
        return out

    def consul(self, f: dict[str, tuple[Any, Path]]) -> ConsulConfig | None:
        if "consul" not in f:
            return None
        raw, path = f["consul"]
        if raw is False:
            return None
        if raw is True:
            return ConsulConfig()
        if isinstance(raw, str):
            if not raw.strip():
                self.error(path, 'must not be empty (leave it out or use false to run '
                                 'without Consul)')
                return None
            cfg = ConsulConfig()
            self.consul_address(cfg, raw.strip(), path)
            return cfg
        c = self.fields(path, raw, ["address", "scheme", "token", "tls"])
        if c is None:
            return None
        cfg = ConsulConfig()
        scheme = self.take(c, "scheme", coerce.to_str)
        if scheme is not None:
            scheme = scheme.lower()
            if scheme not in ("http", "https"):
                self.error(c["scheme"][1], f'must be "http" or "https", got {show(scheme)}')
            else:
                cfg.scheme = scheme
        address = self.take(c, "address", coerce.to_str)
        if address:
            self.consul_address(cfg, address.strip(), c["address"][1], keep_scheme=scheme)
        cfg.token = self.take(c, "token", coerce.to_str) or None
        if "tls" in c:
            t = self.fields(c["tls"][1], c["tls"][0],
                            ["cafile", "capath", "clientcert", "clientkey", "servername",
                             "verify"])
            if t is not None:
                cfg.tls = TLSConfig(
                    cafile=self.take(t, "cafile", coerce.to_str) or None,
                    capath=self.take(t, "capath", coerce.to_str) or None,
                    clientcert=self.take(t, "clientcert", coerce.to_str) or None,
                    clientkey=self.take(t, "clientkey", coerce.to_str) or None,
                    servername=self.take(t, "servername", coerce.to_str) or None,
                    verify=self.take(t, "verify", coerce.to_bool, True),
                )
        return cfg

    def consul_address(self, cfg: ConsulConfig, text: str, path: Path,
                       keep_scheme: str | None = None) -> None:
        """``host:port``, ``http://host:port`` or ``https://host:port``; a missing port is
        Consul's default (8500 for http, 8501 for https)."""
        m = re.match(r"^(https?)://(.*)$", text, re.I)
        if m:
            cfg.scheme = m.group(1).lower()
            text = m.group(2)
        elif keep_scheme:
            cfg.scheme = keep_scheme
        text = text.rstrip("/")
        if not text or "/" in text or " " in text:
            self.error(path, f"invalid Consul address {show(text)} (expected host:port)")
            return
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
            host = f"[{host}]"
        elif text.count(":") > 1:  # a bare IPv6 address
            host, port = f"[{text}]", ""
        else:
            host, _, port = text.partition(":")
        if not port:
            port = "8501" if cfg.scheme == "https" else "8500"
        if not port.isdigit() or not 0 < int(port) < 65536:
            self.error(path, f"invalid port in Consul address {show(text)}")
            return
        cfg.address = f"{host}:{port}"

    def logging(self, raw: Any, path: Path) -> LoggingConfig:
        cfg = LoggingConfig()
        f = self.fields(path, raw, ["level", "format", "output"])
        if f is None:
            return cfg
        level = self.take(f, "level", coerce.to_str)
        if level is not None:
            level = level.upper()
            level = "WARN" if level == "WARNING" else level
            if level not in LOG_LEVELS:
                self.error(f["level"][1], f"unknown log level {show(level)} (one of "
                                          "DEBUG, INFO, WARN, ERROR, FATAL, PANIC)")
            else:
                cfg.level = level
        fmt = self.take(f, "format", coerce.to_str)
        if fmt is not None:
            if fmt.lower() not in LOG_FORMATS:
                self.error(f["format"][1], f'unknown log format {show(fmt)} (one of "default", '
                                           '"text", "json")')
            else:
                cfg.format = fmt.lower()
        output = self.take(f, "output", coerce.to_str)
        if output is not None:
            if not output:
                self.error(f["output"][1], 'must not be empty ("stdout", "stderr" or a file path)')
            else:
                cfg.output = output
        return cfg

    # -- jobs ------------------------------------------------------------------------
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

    def health(self, raw: Any, path: Path) -> HealthConfig | None:
        f = self.fields(path, raw, ["exec", "interval", "ttl", "timeout", "logging",
                                    "failureThreshold"])
        if f is None:
            return None
        cfg = HealthConfig()
        cfg.exec = self.take(f, "exec", coerce.to_exec)
        interval = self.take(f, "interval", coerce.to_duration)
        ttl = self.take(f, "ttl", coerce.to_duration)
        for key, value in (("interval", interval), ("ttl", ttl)):
            if value is not None and value <= 0:
                self.error(f[key][1], "must be > 0")
        # autopilot: absent interval/ttl get defaults (ContainerPilot refuses the config)
        if "interval" not in f:
            interval = min(5.0, ttl / 2) if ttl and ttl > 0 else 5.0
            self.warn(path, f"no 'interval': checking every {format_duration(interval)}")
        if "ttl" not in f:
            ttl = 3 * interval if interval and interval > 0 else 15.0
            self.warn(path, f"no 'ttl': using {format_duration(ttl)} (3 x interval)")
        cfg.interval = interval if interval and interval > 0 else 0.0
        cfg.ttl = ttl if ttl and ttl > 0 else 0.0
        timeout = self.take(f, "timeout", coerce.to_duration)
        if timeout is not None and timeout < 0:
            self.error(f["timeout"][1], "must be >= 0")
        cfg.timeout = timeout if timeout else (cfg.interval if cfg.interval > 0 else None)
        if "logging" in f:
            lf = self.fields(f["logging"][1], f["logging"][0], ["raw"])
            if lf is not None:
                cfg.logging_raw = self.take(lf, "raw", coerce.to_bool, False)
        threshold = self.take(f, "failureThreshold", coerce.to_int)
        if threshold is not None:
            if threshold < 1:
                self.error(f["failureThreshold"][1], "must be >= 1")
            else:
                cfg.failure_threshold = threshold
        if 0 < cfg.ttl < cfg.interval:
            self.warn(path, f"ttl ({format_duration(cfg.ttl)}) is shorter than interval "
                            f"({format_duration(cfg.interval)}): Consul will mark the service "
                            "critical between checks")
        return cfg

    def when(self, raw: Any, path: Path) -> WhenConfig:
        cfg = WhenConfig()
        f = self.fields(path, raw, ["source", "sourceMode", "once", "each", "interval",
                                    "timeout"])
        if f is None:
            return cfg
        if "source" in f:
            sources = self.take(f, "source", coerce.to_str_list)
            if sources is not None:
                if not sources or any(not s for s in sources):
                    self.error(f["source"][1], "must not be empty")
                else:
                    cfg.source = sources
        mode = self.take(f, "sourceMode", coerce.to_str)
        if mode is not None:
            if mode.lower() not in ("any", "all"):
                self.error(f["sourceMode"][1], f'must be "any" or "all", got {show(mode)}')
            else:
                cfg.source_mode = mode.lower()  # type: ignore[assignment]
        for key in ("once", "each"):
            code = self.take(f, key, coerce.to_str)
            if code is None:
                continue
            if code not in TRIGGER_CODES:
                self.error(f[key][1], f"unknown event {show(code)} (one of "
                                      f"{', '.join(sorted(TRIGGER_CODES))})")
            else:
                setattr(cfg, key, code)
        cfg.interval = self.take(f, "interval", coerce.to_duration)
        if cfg.interval is not None and cfg.interval < 0.001:
            self.error(f["interval"][1], "must be at least 1ms")
            cfg.interval = None
        cfg.timeout = self.take(f, "timeout", coerce.to_duration)
        if cfg.timeout is not None and cfg.timeout < 0:
            self.error(f["timeout"][1], "must be >= 0")
        given = [k for k in ("interval", "once", "each") if k in f]
        if len(given) > 1:
            self.error(path, "can have only one of 'interval', 'once', or 'each'")
        # normalisations (see WhenConfig): signals and global codes
        if cfg.source and len(cfg.source) == 1 and cfg.source[0] in SIGNAL_SOURCES \
                and cfg.once is None and cfg.each is None:
            cfg.each = SIGNAL
        code = cfg.once or cfg.each
        if cfg.source is None and code is not None:
            if code in GLOBAL_CODES:
                cfg.source = ["global"]
            elif code in SIGNAL_SOURCES:
                cfg.source = [code]
                if cfg.each == code:
                    cfg.each = SIGNAL
                else:
                    cfg.once = SIGNAL
            else:  # accepted, as ContainerPilot does, but it can never fire
                self.warn(path, f"'{'once' if cfg.once else 'each'}: {code}' without a "
                                "'source' never fires (name the job or watch it comes from)")
        if cfg.source is not None and code is None and cfg.interval is None:
            self.warn(path, "has a 'source' but neither 'once' nor 'each': the job never runs")
        if cfg.source_mode == "all" and cfg.each is not None:
            pass  # fine: runs each time all sources have fired since the last run
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

    def election(self, raw: Any, path: Path, job: JobConfig) -> ElectionConfig | None:
        if raw is False:
            return None
        cfg = ElectionConfig()
        if raw is True:
            raw = {}
        f = self.fields(path, raw, ["key", "sessionTTL", "lockDelay", "renewInterval",
                                    "primaryTag", "replicaTag", "promote", "demote",
                                    "hookTimeout"])
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
        return cfg

    # -- watches, telemetry, control, templates ------------------------------------------
    def watch(self, raw: Any, path: Path) -> WatchConfig | None:
        f = self.fields(path, raw, ["name", "interval", "tag", "dc", "key", "keyprefix"])
        if f is None:
            return None
        name = self.take(f, "name", coerce.to_str, "")
        if "name" not in f:
            self.error((*path, "name"), "is required")
        elif not NAME_RE.match(name):
            self.error(f["name"][1], f"{show(name)} is not a valid watch name: it must start "
                                     "with a lower-case letter and contain only letters, "
                                     "digits and dashes (2 characters at least)")
        cfg = WatchConfig(name=name)
        interval = self.take(f, "interval", coerce.to_duration)
        if "interval" not in f:
            self.error((*path, "interval"), "is required and must be > 0")
        elif interval is not None and interval <= 0:
            self.error(f["interval"][1], "must be > 0")
        cfg.interval = interval or 0.0
        cfg.tag = self.take(f, "tag", coerce.to_str) or None
        cfg.dc = self.take(f, "dc", coerce.to_str) or None
        if "key" in f and "keyprefix" in f:
            self.error(path, "can have only one of 'key' and 'keyprefix'")
        for kind in ("key", "keyprefix"):
            if kind in f:
                key = self.take(f, kind, coerce.to_nonempty_str)
                if key is not None:
                    cfg.kind = kind  # type: ignore[assignment]
                    cfg.key = key.lstrip("/") if kind == "key" else key.lstrip("/")
        if cfg.kind != "service" and cfg.tag:
            self.error(f["tag"][1], "applies to service watches only, not to KV watches")
        return cfg

    def telemetry(self, raw: Any, path: Path, top: Config) -> TelemetryConfig | None:
        f = self.fields(path, raw, ["port", "interfaces", "tags", "metrics", "ready"])
        if f is None:
            return None
        cfg = TelemetryConfig()
        cfg.port = self.take(f, "port", coerce.to_port, 9090)
        if cfg.port == 0:
            cfg.port = 9090
        if "interfaces" in f:
            cfg.interfaces = self.interfaces(*f["interfaces"])
        cfg.tags = self.take(f, "tags", coerce.to_str_list, [])
        if "metrics" in f:
            cfg.metrics = self.each(f["metrics"], self.metric)
            seen: set[str] = set()
            for i, m in enumerate(cfg.metrics):
                if m.full_name in seen:
                    where = self.origin.get(id(m), (*f["metrics"][1], i))
                    self.error(where, f"duplicate metric {show(m.full_name)}")
                seen.add(m.full_name)
        if "ready" in f:
            cfg.ready = self.ready(*f["ready"])
        return cfg

    def metric(self, raw: Any, path: Path) -> MetricConfig | None:
        f = self.fields(path, raw, ["namespace", "subsystem", "name", "help", "type"])
        if f is None:
            return None
        cfg = MetricConfig(
            namespace=self.take(f, "namespace", coerce.to_str, ""),
            subsystem=self.take(f, "subsystem", coerce.to_str, ""),
            name=self.take(f, "name", coerce.to_str, ""),
            help=self.take(f, "help", coerce.to_str, ""),
        )
        if not cfg.name:
            self.error(self.path_of(f, "name", path), "is required")
        for key in ("namespace", "subsystem", "name"):
            if not _METRIC_PART.match(getattr(cfg, key)):
                self.error(f[key][1], "may contain only letters, digits, '_' and ':'")
        mtype = self.take(f, "type", coerce.to_str)
        if mtype is None:
            self.error((*path, "type"), "is required (counter, gauge, histogram or summary)")
        elif mtype.lower() not in METRIC_TYPES:
            self.error(f["type"][1], f"invalid metric type {show(mtype)} (counter, gauge, "
                                     "histogram or summary)")
        else:
            cfg.type = mtype.lower()  # type: ignore[assignment]
        return cfg

    def ready(self, raw: Any, path: Path) -> ReadinessConfig:
        if isinstance(raw, str):
            if raw.lower() != "all":
                self.error(path, f'must be "all", {{job: "name"}} or {{role: "primary", '
                                 f'job: "name"}}, got {show(raw)}')
            return ReadinessConfig()
        f = self.fields(path, raw, ["job", "role"])
        if f is None:
            return ReadinessConfig()
        job = self.take(f, "job", coerce.to_nonempty_str)
        role = self.take(f, "role", coerce.to_nonempty_str)
        if job is None:
            self.error((*path, "job"), "is required")
            return ReadinessConfig()
        if role is None:
            return ReadinessConfig(mode="job", job=job)
        if role not in ("primary", "replica"):
            self.error(f["role"][1], f'must be "primary" or "replica", got {show(role)}')
            return ReadinessConfig(mode="job", job=job)
        return ReadinessConfig(mode="role", job=job, role=role)

    def control(self, raw: Any, path: Path) -> ControlConfig:
        cfg = ControlConfig()
        f = self.fields(path, raw, ["socket", "mode", "group"])
        if f is None:
            return cfg
        cfg.socket = self.take(f, "socket", coerce.to_nonempty_str, cfg.socket)
        cfg.mode = self.take(f, "mode", coerce.to_mode, cfg.mode)
        cfg.group = self.take(f, "group", coerce.to_nonempty_str)
        return cfg

    def template(self, raw: Any, path: Path) -> TemplateConfig | None:
        f = self.fields(path, raw, ["source", "destination", "wait", "mode", "owner", "group",
                                    "command", "commandTimeout"])
        if f is None:
            return None
        cfg = TemplateConfig(source=self.take(f, "source", coerce.to_nonempty_str, ""),
                             destination=self.take(f, "destination", coerce.to_nonempty_str, ""))
        for key in ("source", "destination"):
            if key not in f:
                self.error((*path, key), "is required")
        if cfg.source and not os.path.isabs(cfg.source) and self.base_dir:
            cfg.source = os.path.join(self.base_dir, cfg.source)
        if "wait" in f:
            cfg.wait_min, cfg.wait_max = self.wait(*f["wait"])
        cfg.mode = self.take(f, "mode", coerce.to_mode, 0o644)
        cfg.owner = self.take(f, "owner", coerce.to_nonempty_str)
        cfg.group = self.take(f, "group", coerce.to_nonempty_str)
        cfg.command = self.take(f, "command", coerce.to_exec)
        cfg.command_timeout = self.take(f, "commandTimeout", coerce.to_duration, 30.0)
        self.positive(f, "commandTimeout", path, cfg.command_timeout)
        return cfg

    def wait(self, raw: Any, path: Path) -> tuple[float, float]:
        """consul-template's quiescence: ``"2s:10s"``, ``"2s"`` (max = 4 x min) or
        ``{min, max}``."""
        try:
            if isinstance(raw, dict):
                f = self.fields(path, raw, ["min", "max"])
                if f is None:
                    return 0.0, 0.0
                lo = self.take(f, "min", coerce.to_duration, 0.0)
                hi = self.take(f, "max", coerce.to_duration, 4 * lo)
            else:
                text = coerce.to_str(raw)
                lo_s, sep, hi_s = text.partition(":")
                lo = coerce.to_duration(lo_s)
                hi = coerce.to_duration(hi_s) if sep else 4 * lo
        except Invalid as exc:
            self.error(path, f'{exc} (expected "min:max" like "2s:10s")')
            return 0.0, 0.0
        if lo < 0 or hi < lo:
            self.error(path, f"needs 0 <= min <= max, got min {format_duration(lo)}, "
                             f"max {format_duration(hi)}")
        return lo, hi

    # -- across sections -------------------------------------------------------------------
    def cross_checks(self, cfg: Config, f: dict[str, tuple[Any, Path]]) -> None:
        seen: dict[str, str] = {}
        for i, job in enumerate(cfg.jobs):
            where = self.origin.get(id(job), ("jobs", i))
            if job.name and job.name in seen:
                self.error((*where, "name"), f"duplicate job name {show(job.name)} "
                                             f"(also {seen[job.name]})")
            seen.setdefault(job.name, format_path(where))
            if job.election is not None and cfg.consul is None:
                self.error((*where, "election"), "needs Consul, but 'consul' is not set")
            if job.port and cfg.consul is None:
                self.warn((*where, "port"), "discovery is off (no 'consul'): the service "
                                            "is not registered")
        wseen: set[str] = set()
        for i, watch in enumerate(cfg.watches):
            where = self.origin.get(id(watch), ("watches", i))
            if watch.name and watch.name in wseen:
                self.error((*where, "name"), f"duplicate watch name {show(watch.name)}")
            wseen.add(watch.name)
        if cfg.watches and cfg.consul is None:
            self.warn(("watches",), "discovery is off (no 'consul'): watches never fire")
        if cfg.main_job is not None and cfg.job(cfg.main_job) is None:
            self.error(f["mainJob"][1], f"no job named {show(cfg.main_job)}")
        if cfg.telemetry is not None and cfg.telemetry.ready.job is not None:
            ready = cfg.telemetry.ready
            job = cfg.job(ready.job)
            rpath = ("telemetry", "ready", "job")
            if job is None:
                self.error(rpath, f"no job named {show(ready.job)}")
            elif ready.mode == "role" and job.election is None:
                self.error(rpath, f"job {show(ready.job)} has no 'election', so it has no role")


def interface_spec_problem(spec: str) -> str | None:
    """Why an interface spec is malformed, or None. Nothing is resolved here: a config
    must load on a machine that lacks the interface (discovery resolves at registration)."""
    s = spec.strip()
    if s in ("inet", "inet6"):
        return None
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

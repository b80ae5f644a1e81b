"""Strict request-body decoding with Go's encoding/json manners.

Consul decodes bodies into Go structs with unknown fields disallowed; field names match
case-insensitively (and Consul also accepts snake_case aliases). A schema here maps canonical
field names to a nested schema (dict), a list-of-object schema ([dict]) or a type tag.
"""

from __future__ import annotations

import json
from typing import Any

from autopilot.catalog.gojson import syntax_error


class DecodeError(ValueError):
    """Answered as 400 ``Request decode failed: <message>``."""


ANY = "any"
STR = "string"
INT = "int"
BOOL = "bool"
STRLIST = "[]string"
STRMAP = "map[string]string"

CHECK: dict[str, Any] = {
    "CheckID": STR, "ID": STR, "Name": STR, "Notes": STR, "Status": STR, "ServiceID": STR,
    "Node": STR, "TTL": ANY, "HTTP": STR, "Header": ANY, "Method": STR, "Body": STR, "TCP": STR,
    "Interval": ANY, "Timeout": ANY, "DeregisterCriticalServiceAfter": ANY, "Args": STRLIST,
    "ScriptArgs": STRLIST, "DockerContainerID": STR, "Shell": STR, "GRPC": STR,
    "GRPCUseTLS": BOOL, "TLSSkipVerify": BOOL, "TLSServerName": STR, "AliasNode": STR,
    "AliasService": STR, "SuccessBeforePassing": INT, "FailuresBeforeCritical": INT,
    "OutputMaxSize": INT, "H2PING": STR, "H2PingUseTLS": BOOL, "Namespace": STR,
    "Partition": STR, "Output": STR, "Definition": ANY, "Type": STR, "ServiceName": STR,
    "ServiceTags": STRLIST, "CreateIndex": INT, "ModifyIndex": INT, "ExposedPort": INT,
}
#: a check definition given to the agent (Consul's CheckDefinition: no read-only fields)
AGENT_CHECK: dict[str, Any] = {k: v for k, v in CHECK.items() if k not in (
    "Output", "Definition", "Type", "ServiceName", "ServiceTags", "CreateIndex",
    "ModifyIndex", "ExposedPort", "Node")}
SERVICE: dict[str, Any] = {
    "ID": STR, "Name": STR, "Service": STR, "Tags": STRLIST, "Address": STR,
    "TaggedAddresses": ANY, "Meta": STRMAP, "Port": INT, "Kind": STR, "Proxy": ANY,
    "Connect": ANY, "EnableTagOverride": BOOL, "Weights": {"Passing": INT, "Warning": INT},
    "Check": AGENT_CHECK,
    "Checks": [AGENT_CHECK], "Namespace": STR, "Partition": STR, "SocketPath": STR,
    "Token": STR, "CreateIndex": INT, "ModifyIndex": INT, "ContentHash": STR,
    "Datacenter": STR,
}
CATALOG_REGISTER: dict[str, Any] = {
    "ID": STR, "Node": STR, "Address": STR, "Datacenter": STR, "TaggedAddresses": STRMAP,
    "NodeMeta": STRMAP, "Service": SERVICE, "Check": CHECK, "Checks": [CHECK],
    "SkipNodeUpdate": BOOL, "Token": STR, "Namespace": STR, "Partition": STR,
}
CATALOG_DEREGISTER: dict[str, Any] = {
    "Node": STR, "Datacenter": STR, "ServiceID": STR, "CheckID": STR, "Token": STR,
    "Namespace": STR, "Partition": STR,
}
CHECK_UPDATE: dict[str, Any] = {"Status": STR, "Output": STR}
SESSION: dict[str, Any] = {
    "ID": STR, "Name": STR, "Node": STR, "Checks": STRLIST, "NodeChecks": STRLIST,
    "ServiceChecks": [{"ID": STR, "Namespace": STR}], "LockDelay": ANY, "Behavior": STR,
    "TTL": STR, "Namespace": STR, "Partition": STR,
}

_GO_TYPES = {STR: "string", INT: "int", BOOL: "bool", STRLIST: "[]string",
             STRMAP: "map[string]string"}


def _norm(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def _type_error(value: Any, want: str, field: str) -> DecodeError:
    got = {bool: "bool", int: "number", float: "number", str: "string", list: "array",
           dict: "object"}.get(type(value), "value")
    return DecodeError(f"json: cannot unmarshal {got} into Go struct field {field} "
                       f"of type {_GO_TYPES.get(want, want)}")


def _check_leaf(value: Any, kind: str, field: str) -> Any:
    if value is None or kind == ANY:
        return value
    ok = {
        STR: isinstance(value, str),
        INT: isinstance(value, int) and not isinstance(value, bool)
        or isinstance(value, float) and value.is_integer(),
        BOOL: isinstance(value, bool),
        STRLIST: isinstance(value, list) and all(isinstance(v, str) for v in value),
        STRMAP: isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
    }[kind]
    if not ok:
        raise _type_error(value, kind, field)
    return int(value) if kind == INT else value


def conform(data: Any, schema: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Map ``data`` onto ``schema``'s canonical names; reject unknown fields like Go does."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _type_error(data, "object", where or "body")
    index = {_norm(k): k for k in schema}
    out: dict[str, Any] = {}
    for key, value in data.items():
        canon = index.get(_norm(key))
        if canon is None:
            raise DecodeError(f'json: unknown field "{key}"')
        sub = schema[canon]
        field = f"{where}.{canon}"  # Go names top-level fields ".Port" (Consul's wrapper)
        if isinstance(sub, dict):
            out[canon] = conform(value, sub, field) if value is not None else None
        elif isinstance(sub, list):
            if value is None:
                out[canon] = None
            elif not isinstance(value, list):
                raise _type_error(value, "array", field)
            else:
                out[canon] = [conform(v, sub[0], field) for v in value]
        else:
            out[canon] = _check_leaf(value, sub, field)
    return out


def load_json(body: bytes) -> Any:
    """Parse a request body as JSON (empty body -> None); raise DecodeError on bad input."""
    if not body.strip():
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 in request body at byte {exc.start}") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nesting too deep"
        if isinstance(exc, json.JSONDecodeError) and exc.msg == "Extra data":
            # Go's json.Decoder reads one value and ignores what follows it
            return json.JSONDecoder(parse_constant=_no_constant).raw_decode(text.lstrip())[0]
        if not isinstance(exc, RecursionError):
            msg = syntax_error(text) or msg
        raise DecodeError(msg) from None


def _no_constant(name: str) -> Any:
    """NaN/Infinity are not JSON; Go refuses them."""
    raise DecodeError(syntax_error(name) or f"invalid character {name[0]!r}")

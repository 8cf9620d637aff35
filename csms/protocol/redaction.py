"""Keep secrets out of records, traces and logs.

Secrets OCPP 2.0.1 can carry: the station's ``SecurityCtrlr.BasicAuthPassword`` (set with
SetVariables when a password is rotated; a lax station may even report it in GetVariables or
NotifyReport) and the network credentials of SetNetworkProfile (APN password, SIM PIN, VPN
password and key). OCPP 1.6 carries the station's password as the configuration key
``AuthorizationKey`` (ChangeConfiguration, GetConfiguration). Redaction works on the structure, so it
covers both directions of any action.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

SECRET_VARIABLES = frozenset({"BasicAuthPassword", "AuthorizationKey"})  # 2.0.1 variable, 1.6 configuration key
SECRET_KEYS = frozenset({"apnPassword", "simPin", "password", "key"})  # SetNetworkProfile APN / VPN
REDACTED = "***"
# Actions whose payloads (request or response) can hold a secret; others are recorded as they are.
SENSITIVE_ACTIONS = frozenset({"SetVariables", "GetVariables", "SetNetworkProfile", "NotifyReport",
                               "ChangeConfiguration", "GetConfiguration"})
_CONFIGURATION_PAIR = frozenset({"key", "value", "readonly"})  # 1.6 KeyValue / ChangeConfiguration.req
_MARKERS = ("assword", "simPin", '"key"')
_JSON_VALUE = r'("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?)'
_SECRET_KEY_VALUE = re.compile(r'("(?:' + "|".join(sorted(SECRET_KEYS)) + r')"\s*:\s*)' + _JSON_VALUE)
_ANY_SECRET_VALUE = re.compile(r'("(?:' + "|".join(sorted(SECRET_KEYS | {"attributeValue", "value", "actualValue"}))
                               + r')"\s*:\s*)' + _JSON_VALUE)


def variable_value(variable_name: str | None, value: Any) -> Any:
    """The value to keep for a device-model variable: secrets are never stored."""
    return REDACTED if variable_name in SECRET_VARIABLES and value is not None else value


def mentions_secret(text: str) -> bool:
    """Cheap pre-check: could this text hold a secret? (False means it certainly does not.)"""
    return any(m in text for m in _MARKERS)


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret replaced by ``***``."""
    if isinstance(value, list):
        return [redact(v) for v in value]
    if not isinstance(value, dict):
        return value
    if isinstance(value.get("key"), str) and "value" in value and set(value) <= _CONFIGURATION_PAIR:
        # A 1.6 configuration key and its value: the key's name is no secret, the password's value is.
        return {**value, "value": REDACTED} if value["key"] in SECRET_VARIABLES else dict(value)
    out = {k: (REDACTED if k in SECRET_KEYS and not isinstance(v, (dict, list)) else redact(v))
           for k, v in value.items()}
    variable = value.get("variable")
    if isinstance(variable, dict) and variable.get("name") in SECRET_VARIABLES:
        for field in ("attributeValue", "value", "actualValue"):
            if field in out:
                out[field] = REDACTED
        if isinstance(out.get("variableAttribute"), list):
            out["variableAttribute"] = [{**a, "value": REDACTED} if isinstance(a, dict) and "value" in a else a
                                        for a in out["variableAttribute"]]
    return out


def redact_payload(action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload to record for ``action`` (request or response)."""
    return redact(payload) if action in SENSITIVE_ACTIONS else payload


def redact_frame(frame: str) -> str:
    """A raw OCPP-J frame with its secrets blanked (frames without a secret marker stay as they are)."""
    if not mentions_secret(frame):
        return frame
    try:
        return orjson.dumps(redact(orjson.loads(frame))).decode()
    except orjson.JSONDecodeError:
        # Not a bare frame (e.g. a log line quoting one): blank the values of secret keys in place.
        pattern = _ANY_SECRET_VALUE if any(v in frame for v in SECRET_VARIABLES) else _SECRET_KEY_VALUE
        return pattern.sub(lambda m: m.group(1) + '"' + REDACTED + '"', frame)

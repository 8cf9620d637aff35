"""Compiled JSON-schema validation of OCPP payloads.

The schemas are the official ones shipped inside the `ocpp` package. Each is compiled once with
fastjsonschema (about 20x cheaper per payload than jsonschema) the first time an action is seen,
and a failure is mapped to the OCPP-J error code the specification prescribes for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

import fastjsonschema
import ocpp

from csms.protocol.errors import InvalidRequest, OcppError
from csms.protocol.version import ProtocolVersion

Direction = Literal["Request", "Response"]

_OCPP_DIR = os.path.dirname(ocpp.__file__)

# Which OCPP-J error code a failed JSON-schema rule maps to (OCPP-J 2.0.1, section 4.2.3).
_RULE_TO_CODE: dict[str, str] = {
    "type": "TypeConstraintViolation",
    "required": "OccurrenceConstraintViolation",
    "minItems": "OccurrenceConstraintViolation",
    "maxItems": "OccurrenceConstraintViolation",
    "additionalProperties": "FormatViolation",
    "enum": "PropertyConstraintViolation",
    "maxLength": "PropertyConstraintViolation",
    "minLength": "PropertyConstraintViolation",
    "minimum": "PropertyConstraintViolation",
    "maximum": "PropertyConstraintViolation",
    "exclusiveMinimum": "PropertyConstraintViolation",
    "exclusiveMaximum": "PropertyConstraintViolation",
    "pattern": "PropertyConstraintViolation",
    "format": "PropertyConstraintViolation",
}


def schema_path(schema_dir: str, action: str, direction: Direction) -> str:
    return os.path.join(_OCPP_DIR, schema_dir, "schemas", f"{action}{direction}.json")


@lru_cache(maxsize=None)
def known_actions(schema_dir: str) -> frozenset[str]:
    """Every action that has a request schema in this OCPP version."""
    folder = os.path.join(_OCPP_DIR, schema_dir, "schemas")
    return frozenset(n[: -len("Request.json")] for n in os.listdir(folder) if n.endswith("Request.json"))


@lru_cache(maxsize=None)
def validator(schema_dir: str, action: str, direction: Direction) -> Callable[[Any], Any]:
    """The compiled validator for one action and direction (raises KeyError if there is none)."""
    if action not in known_actions(schema_dir):
        raise KeyError(action)
    with open(schema_path(schema_dir, action, direction), encoding="utf-8-sig") as f:
        schema = json.load(f)
    schema.pop("$id", None)
    # use_default=False: validation must not add schema defaults (e.g. "tbc": false) to the payload,
    # so what we store is what the station sent, and a caller's request dict is never mutated.
    return fastjsonschema.compile(schema, use_default=False)


def validate(schema_dir: str, action: str, direction: Direction, payload: Any) -> None:
    """Validate ``payload``; raise :class:`OcppError` with the prescribed code and the offending field."""
    check = validator(schema_dir, action, direction)
    try:
        check(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        field = _offending_field(exc)
        message = (exc.message or "").replace("data.", "", 1).replace("data ", "payload ", 1)
        raise OcppError(
            _RULE_TO_CODE.get(exc.rule or "", "FormatViolation"),
            f"{action}{direction}: {message}",
            {"field": field, "rule": exc.rule},
        ) from None


def check_outgoing(version: ProtocolVersion, action: str, payload: Any) -> None:
    """Refuse a CSMS-initiated request before it is sent: raise :class:`InvalidRequest`."""
    sd = version.schema_dir
    if action not in known_actions(sd):
        raise InvalidRequest("NotImplemented", f"{action}Request: unknown OCPP action {action!r}",
                             {"field": "action", "rule": "knownAction"})
    if action in version.station_only:
        raise InvalidRequest("NotSupported", f"{action}Request: only a charging station sends {action}",
                             {"field": "action", "rule": "csmsAction"})
    try:
        validate(sd, action, "Request", payload)
    except OcppError as exc:
        raise InvalidRequest(exc.code, exc.description, exc.details) from None


def _offending_field(exc: fastjsonschema.JsonSchemaValueException) -> str:
    """The dotted path of the field at fault: for a missing or an unexpected property that is the
    property itself, not the object holding it (fastjsonschema names the object)."""
    where = (exc.name or "data").removeprefix("data").lstrip(".")
    culprits: list[str] = []
    if exc.rule == "required" and isinstance(exc.value, dict):
        culprits = [k for k in exc.rule_definition or () if k not in exc.value]
    elif exc.rule == "additionalProperties" and isinstance(exc.value, dict):
        known = (exc.definition or {}).get("properties", {})
        culprits = sorted(k for k in exc.value if k not in known)
    if culprits:
        return f"{where}.{culprits[0]}" if where else culprits[0]
    return where or "<payload>"


def schema_document(schema_dir: str, action: str, direction: Direction) -> dict[str, Any]:
    """The raw schema, for the operator API's documentation of the generic command path."""
    with open(schema_path(schema_dir, action, direction), encoding="utf-8-sig") as f:
        document: dict[str, Any] = json.load(f)
    return document

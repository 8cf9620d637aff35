"""Compiled JSON-schema validation of OCPP payloads.

The schemas are the official ones shipped inside the `ocpp` package. Each is compiled once with
fastjsonschema (about 20x cheaper per payload than jsonschema) the first time an action is seen,
and a failure is mapped to the OCPP-J error code the specification prescribes for it.

Three rules are added to the official ones, each answered with PropertyConstraintViolation and
the field's name (docs/protocol.md, "Oddities"): integers must fit a signed 64-bit integer (the
schemas set no bound, and no store keeps more), date-times must name an instant in the years
1-9999 and are rewritten in one canonical form (csms.domain.datetimes), and id tokens carry no
control characters.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import fastjsonschema
import ocpp

from csms.domain.datetimes import BadDateTime, is_canonical, normalise
from csms.domain.values import INT_MAX, INT_MIN
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
    path = os.path.join(_OCPP_DIR, schema_dir, "schemas", f"{action}{direction}.json")
    if direction == "Request" and not os.path.exists(path):  # OCPP 1.6 names a request's schema <Action>.json
        return os.path.join(_OCPP_DIR, schema_dir, "schemas", f"{action}.json")
    return path


@lru_cache(maxsize=None)
def known_actions(schema_dir: str) -> frozenset[str]:
    """Every action that has a request schema in this OCPP version (``<Action>Request.json``, or
    ``<Action>.json`` beside an ``<Action>Response.json`` as OCPP 1.6 names them)."""
    folder = os.path.join(_OCPP_DIR, schema_dir, "schemas")
    names = set(os.listdir(folder))
    return frozenset({n[: -len("Request.json")] for n in names if n.endswith("Request.json")}
                     | {n[: -len(".json")] for n in names
                        if not n.endswith(("Request.json", "Response.json")) and n.endswith(".json")
                        and n[: -len(".json")] + "Response.json" in names})


@lru_cache(maxsize=None)
def validator(schema_dir: str, action: str, direction: Direction) -> Callable[[Any], Any]:
    """The compiled validator for one action and direction (raises KeyError if there is none)."""
    if action not in known_actions(schema_dir):
        raise KeyError(action)
    with open(schema_path(schema_dir, action, direction), encoding="utf-8-sig") as f:
        schema = json.load(f)
    schema.pop("$id", None)
    _bound_integers(schema)
    # use_default=False: validation must not add schema defaults (e.g. "tbc": false) to the payload,
    # so what we store is what the station sent, and a caller's request dict is never mutated.
    return fastjsonschema.compile(schema, use_default=False)


def _bound_integers(node: Any) -> None:
    """Give every integer of the schema the bounds every store keeps (csms.domain.values), keeping tighter ones."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            node["minimum"] = max(node.get("minimum", INT_MIN), INT_MIN)
            node["maximum"] = min(node.get("maximum", INT_MAX), INT_MAX)
        for value in node.values():
            _bound_integers(value)
    elif isinstance(node, list):
        for value in node:
            _bound_integers(value)


def validate(schema_dir: str, action: str, direction: Direction, payload: Any) -> None:
    """Validate ``payload``; raise :class:`OcppError` with the prescribed code and the offending field.

    Date-times are rewritten in canonical form in place (the payload is the parsed frame, or a
    request we build, which is canonical already).
    """
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
    spots = field_spots(schema_dir, action, direction)
    if spots.date_times or spots.id_tokens:
        _check_fields(spots, payload, f"{action}{direction}")


# Date-times and id tokens ---------------------------------------------------------------------
Path = tuple[str, ...]  # property names, "*" for every item of an array
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
ID_TOKEN_FIELDS = frozenset({"idToken", "additionalIdToken",  # IdTokenType.idToken, AdditionalInfoType
                             "idTag", "parentIdTag"})  # OCPP 1.6


@dataclass(frozen=True)
class FieldSpots:
    """Where a message's schema puts date-times and id tokens."""

    date_times: tuple[Path, ...]
    id_tokens: tuple[Path, ...]


@lru_cache(maxsize=None)
def field_spots(schema_dir: str, action: str, direction: Direction) -> FieldSpots:
    doc = schema_document(schema_dir, action, direction)
    definitions = doc.get("definitions", {})
    date_times: list[Path] = []
    id_tokens: list[Path] = []

    def walk(node: dict[str, Any], path: Path, name: str) -> None:
        if "$ref" in node:
            if path.count("*") + len(path) > 64:  # the OCPP schemas are not recursive; never loop
                return
            node = definitions[node["$ref"].rsplit("/", 1)[-1]]
        kind = node.get("type")
        if kind == "string":
            if node.get("format") == "date-time":
                date_times.append(path)
            elif name in ID_TOKEN_FIELDS:
                id_tokens.append(path)
        elif kind == "object":
            for key, sub in node.get("properties", {}).items():
                walk(sub, (*path, key), key)
        elif kind == "array" and isinstance(node.get("items"), dict):
            walk(node["items"], (*path, "*"), name)

    walk(doc, (), "")
    # Shallow fields first: a refusal names the message's own timestamp before its meter values'.
    return FieldSpots(tuple(sorted(date_times, key=len)), tuple(sorted(id_tokens, key=len)))


def _check_fields(spots: FieldSpots, payload: dict[str, Any], message: str) -> None:
    for path in spots.date_times:
        for holder, key in _holders(payload, path):
            value = holder[key]
            if is_canonical(value):  # the schema's format check already vouched for shape and date
                continue
            try:
                holder[key] = normalise(value)
            except BadDateTime as exc:
                field = _field_of(payload, path, holder)
                raise OcppError("PropertyConstraintViolation", f"{message}: {field}: {exc}",
                                {"field": field, "rule": "dateTimeRange"}) from None
    for path in spots.id_tokens:
        for holder, key in _holders(payload, path):
            if _CONTROL.search(holder[key]):
                field = _field_of(payload, path, holder)
                raise OcppError("PropertyConstraintViolation", f"{message}: {field} contains a control character",
                                {"field": field, "rule": "noControlCharacters"})


def _holders(payload: Any, path: Path) -> list[tuple[Any, Any]]:
    """(container, key) of every value at ``path`` in a validated payload (per message: plain loops)."""
    nodes = [payload]
    for head in path[:-1]:
        if head == "*":
            nodes = [item for node in nodes if isinstance(node, list) for item in node]
        else:
            nodes = [node[head] for node in nodes if isinstance(node, dict) and head in node]
        if not nodes:
            return []
    last = path[-1]
    if last == "*":
        return [(node, i) for node in nodes if isinstance(node, list) for i in range(len(node))]
    return [(node, last) for node in nodes if isinstance(node, dict) and last in node]


def _field_of(payload: Any, path: Path, holder: Any) -> str:
    """The name of a refused field as CALLERRORs spell it (``meterValue[1].timestamp``); only on a refusal."""
    def walk(node: Any, depth: int, name: str) -> str | None:
        head = path[depth]
        if head == "*":
            children = [(item, f"{name}[{i}]") for i, item in enumerate(node)] if isinstance(node, list) else []
        else:
            children = [(node[head], f"{name}.{head}" if name else head)] if isinstance(node, dict) and head in node else []
        for child, child_name in children:
            if depth == len(path) - 1:
                if node is holder:
                    return child_name
                continue
            found = walk(child, depth + 1, child_name)
            if found is not None:
                return found
        return None
    return walk(payload, 0, "") or ".".join(path)


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

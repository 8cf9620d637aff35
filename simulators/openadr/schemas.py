"""JSON Schemas (draft 7) for the OpenADR 3 objects, written by hand from the OpenAPI documents.

The published OpenAPI YAML is not vendored here, so these schemas restate, per version, what its
`components/schemas` require: required keys, string lengths, enums, patterns and array item types.
OpenAPI's `nullable: true` is written as a JSON type union with "null". The VTN uses them to answer
400 on a bad request body; the tests use them to check every response and notification it sends.

Where 3.1.0 differs from 3.0.1 (targets as plain strings, object metadata required on responses,
`clientID`, program `attributes`, CRUD notification operations, request objectTypes for vens and
resources) the builder below takes the version.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import fastjsonschema

VERSIONS = ("3.0.1", "3.1.0")

OBJECT_ID: dict[str, Any] = {"type": "string", "pattern": "^[a-zA-Z0-9_-]*$", "minLength": 1, "maxLength": 128}
DATE_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
DURATION_PATTERN = (r"^(-?)P(?=\d|T\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)([DW]))?"
                    r"(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
DURATION: dict[str, Any] = {"type": "string", "pattern": DURATION_PATTERN}
NAME_128: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 128}
OBJECT_TYPES = ["PROGRAM", "EVENT", "REPORT", "SUBSCRIPTION", "VEN", "RESOURCE"]
NOTIFY_OPERATIONS = {"3.0.1": ["GET", "POST", "PUT", "DELETE"], "3.1.0": ["CREATE", "READ", "UPDATE", "DELETE"]}
SUBSCRIBE_OPERATIONS = ["READ", "CREATE", "UPDATE", "DELETE"]


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.0 `nullable: true` in JSON Schema terms."""
    return {"anyOf": [schema, {"type": "null"}]}


def _array(items: dict[str, Any], nullable: bool = True) -> dict[str, Any]:
    schema = {"type": "array", "items": items}
    return _nullable(schema) if nullable else schema


def _obj(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


POINT = _obj(["x", "y"], {"x": {"type": "number"}, "y": {"type": "number"}})
VALUES_MAP = _obj(["type", "values"], {
    "type": NAME_128,
    "values": {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"},
                                                    POINT]}}})
INTERVAL_PERIOD_301 = _obj(["start"], {"start": DATE_TIME, "duration": DURATION, "randomizeStart": DURATION})
INTERVAL_PERIOD_310 = _obj([], {"start": DATE_TIME, "duration": DURATION, "randomizeStart": DURATION})


def _interval(version: str) -> dict[str, Any]:
    period = INTERVAL_PERIOD_301 if version == "3.0.1" else INTERVAL_PERIOD_310
    return _obj(["id", "payloads"], {"id": {"type": "integer"}, "intervalPeriod": period,
                                     "payloads": {"type": "array", "items": VALUES_MAP}})


def _target(version: str) -> dict[str, Any]:
    """3.0.1 targets are valuesMaps ({type, values}); 3.1.0 targets are strings of 1-128 characters."""
    return VALUES_MAP if version == "3.0.1" else NAME_128


def _event_payload_descriptor(version: str) -> dict[str, Any]:
    required = ["payloadType"] if version == "3.0.1" else ["objectType", "payloadType"]
    return _obj(required, {"objectType": {"enum": ["EVENT_PAYLOAD_DESCRIPTOR"]},
                           "payloadType": NAME_128, "units": _nullable({"type": "string"}),
                           "currency": _nullable({"type": "string"})})


REPORT_PAYLOAD_DESCRIPTOR = _obj(["payloadType"], {
    "objectType": {"enum": ["REPORT_PAYLOAD_DESCRIPTOR"]}, "payloadType": NAME_128,
    "readingType": _nullable({"type": "string"}), "units": _nullable({"type": "string"}),
    "accuracy": _nullable({"type": "number"}),
    "confidence": _nullable({"type": "integer", "minimum": 0, "maximum": 100})})


def _report_descriptor(version: str) -> dict[str, Any]:
    return _obj(["payloadType"], {
        "payloadType": NAME_128, "readingType": _nullable({"type": "string"}), "units": _nullable({"type": "string"}),
        "targets": _array(_target(version)), "aggregate": {"type": "boolean"}, "startInterval": {"type": "integer"},
        "numIntervals": {"type": "integer"}, "historical": {"type": "boolean"}, "frequency": {"type": "integer"},
        "repeat": {"type": "integer"}})


def _metadata(kind: str, version: str, response: bool) -> tuple[list[str], dict[str, Any]]:
    """VTN-provisioned fields; 3.1.0 makes them required on every response object."""
    props = {"id": OBJECT_ID, "createdDateTime": DATE_TIME, "modificationDateTime": DATE_TIME,
             "objectType": {"enum": [kind]}}
    required = ["id", "createdDateTime", "modificationDateTime", "objectType"] if response and version != "3.0.1" else []
    return required, props


def program_schema(version: str, response: bool = True) -> dict[str, Any]:
    required, props = _metadata("PROGRAM", version, response)
    props |= {"programName": NAME_128, "intervalPeriod": INTERVAL_PERIOD_301 if version == "3.0.1" else INTERVAL_PERIOD_310,
              "programDescriptions": _array(_obj(["URL"], {"URL": {"type": "string"}})),
              "payloadDescriptors": _array({"anyOf": [_event_payload_descriptor(version), REPORT_PAYLOAD_DESCRIPTOR]}),
              "targets": _array(_target(version))}
    if version == "3.0.1":
        for key in ("programLongName", "retailerName", "retailerLongName", "programType", "country",
                    "principalSubdivision"):
            props[key] = _nullable({"type": "string"})
        props |= {"timeZoneOffset": DURATION, "bindingEvents": _nullable({"type": "boolean"}),
                  "localPrice": _nullable({"type": "boolean"})}
    else:
        props["attributes"] = _array(VALUES_MAP)
    return _obj(required + ["programName"], props)


def event_schema(version: str, response: bool = True) -> dict[str, Any]:
    required, props = _metadata("EVENT", version, response)
    props |= {"programID": OBJECT_ID, "eventName": _nullable({"type": "string"}),
              "priority": _nullable({"type": "integer", "minimum": 0}), "targets": _array(_target(version)),
              "reportDescriptors": _array(_report_descriptor(version)),
              "payloadDescriptors": _array(_event_payload_descriptor(version)),
              "intervalPeriod": INTERVAL_PERIOD_301 if version == "3.0.1" else INTERVAL_PERIOD_310,
              "intervals": {"type": "array", "items": _interval(version)}}
    if version != "3.0.1":
        props["duration"] = DURATION
    required += ["programID", "intervals"] if version == "3.0.1" else ["programID"]
    return _obj(required, props)


def report_schema(version: str, response: bool = True) -> dict[str, Any]:
    required, props = _metadata("REPORT", version, response)
    resource = _obj(["resourceName", "intervals"], {
        "resourceName": NAME_128, "intervalPeriod": INTERVAL_PERIOD_301 if version == "3.0.1" else INTERVAL_PERIOD_310,
        "intervals": {"type": "array", "items": _interval(version)}})
    props |= {"programID": OBJECT_ID, "eventID": OBJECT_ID, "clientName": NAME_128,
              "reportName": _nullable({"type": "string"}), "payloadDescriptors": _array(REPORT_PAYLOAD_DESCRIPTOR),
              "resources": {"type": "array", "items": resource}}
    if version == "3.0.1":
        required += ["programID", "eventID", "clientName", "resources"]
    else:
        props["clientID"] = NAME_128
        required += ["eventID", "clientName", "resources"] + (["clientID"] if response else [])
    return _obj(required, props)


def subscription_schema(version: str, response: bool = True) -> dict[str, Any]:
    required, props = _metadata("SUBSCRIPTION", version, response)
    operation = _obj(["objects", "operations", "callbackUrl"], {
        "objects": {"type": "array", "items": {"enum": OBJECT_TYPES}},
        "operations": {"type": "array", "items": {"enum": SUBSCRIBE_OPERATIONS}},
        "callbackUrl": {"type": "string", "minLength": 2}, "bearerToken": _nullable({"type": "string"})})
    props |= {"clientName": NAME_128, "programID": OBJECT_ID,
              "objectOperations": {"type": "array", "items": operation}, "targets": _array(_target(version))}
    if version == "3.0.1":
        required += ["clientName", "programID", "objectOperations"]
    else:
        props["clientID"] = NAME_128
        required += ["clientName", "objectOperations"] + (["clientID"] if response else [])
    return _obj(required, props)


def ven_schema(version: str, response: bool = True) -> dict[str, Any]:
    required, props = _metadata("VEN", version, response)
    props |= {"venName": NAME_128, "attributes": _array(VALUES_MAP), "targets": _array(_target(version))}
    if version == "3.0.1":
        props["resources"] = _array(resource_schema(version, response))
    else:
        props["clientID"] = NAME_128
        if not response:  # a request says who wrote it: BL_VEN_REQUEST (with clientID) or VEN_VEN_REQUEST
            props["objectType"] = {"enum": ["BL_VEN_REQUEST", "VEN_VEN_REQUEST"]}
            required.append("objectType")
        else:
            required.append("clientID")
    return _obj(required + ["venName"], props)


def resource_schema(version: str, response: bool = True) -> dict[str, Any]:
    required, props = _metadata("RESOURCE", version, response)
    props |= {"resourceName": NAME_128, "venID": OBJECT_ID, "attributes": _array(VALUES_MAP),
              "targets": _array(_target(version))}
    if version != "3.0.1":
        props["clientID"] = NAME_128
        if not response:
            props["objectType"] = {"enum": ["BL_RESOURCE_REQUEST", "VEN_RESOURCE_REQUEST"]}
            required += ["objectType", "venID"]
        else:
            required += ["clientID", "venID"]
    return _obj(required + ["resourceName"], props)


def notification_schema(version: str) -> dict[str, Any]:
    objects = [program_schema(version), report_schema(version), event_schema(version),
               subscription_schema(version), ven_schema(version), resource_schema(version)]
    return _obj(["objectType", "operation", "object"], {
        "objectType": {"enum": OBJECT_TYPES}, "operation": {"enum": NOTIFY_OPERATIONS[version]},
        "object": {"type": "object", "anyOf": objects}, "targets": _array(_target(version))})


PROBLEM = {"type": "object", "properties": {
    "type": {"type": "string"}, "title": {"type": "string"},
    "status": {"type": "integer", "minimum": 100, "exclusiveMaximum": 600},
    "detail": {"type": "string"}, "instance": {"type": "string"}}}
TOKEN_RESPONSE = _obj(["access_token", "token_type"], {
    "access_token": {"type": "string", "minLength": 1, "maxLength": 4096}, "token_type": {"enum": ["Bearer"]},
    "expires_in": {"type": "integer"}, "refresh_token": {"type": "string", "minLength": 1, "maxLength": 4096},
    "scope": {"type": "string", "maxLength": 4096}})
AUTH_ERROR = _obj(["error"], {
    "error": {"enum": ["invalid_request", "invalid_client", "invalid_grant", "invalid_scope", "unauthorized_client",
                       "unsupported_grant_type"]},
    "error_description": {"type": "string"}, "error_uri": {"type": "string"}})
AUTH_SERVER_INFO = _obj(["tokenURL"], {"tokenURL": {"type": "string", "minLength": 2}})

_BUILDERS = {"program": program_schema, "event": event_schema, "report": report_schema,
             "subscription": subscription_schema, "ven": ven_schema, "resource": resource_schema}


def schema(kind: str, version: str, response: bool = True) -> dict[str, Any]:
    """The schema of one object kind ('program', ..., 'notification', 'problem', 'token', ...)."""
    if kind == "notification":
        return notification_schema(version)
    fixed = {"problem": PROBLEM, "token": TOKEN_RESPONSE, "auth_error": AUTH_ERROR, "auth_server": AUTH_SERVER_INFO}
    if kind in fixed:
        return fixed[kind]
    return _BUILDERS[kind](version, response)


@cache
def validator(kind: str, version: str, response: bool = True) -> Any:
    """A compiled validator; raises `fastjsonschema.JsonSchemaException` naming the failing path."""
    return fastjsonschema.compile(schema(kind, version, response))

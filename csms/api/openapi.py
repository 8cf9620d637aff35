"""The OpenAPI 3.1 document of the operator API, written as data and served at /openapi.json.

A test checks that every route of the app has an entry here and that every entry has a route.
Request body schemas come from ``csms.api.schemas`` (the same ones that validate requests).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from csms.api import schemas as s
from csms.api.commands import TYPED
from csms.api.health import PUBLIC
from csms.api.http import Routes, json_response
from csms.api.operations import OPERATIONS

routes = Routes()

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref("Error"))}


def _ok(description: str, schema: dict[str, Any] | None = None, status: str = "200") -> dict[str, Any]:
    body: dict[str, Any] = {"description": description}
    if schema is not None:
        body["content"] = _json(schema)
    return {status: body}


_PATH_PARAM = {"station_id": ("the charging station identity", s.STATION_ID),
               "transaction_id": ("the station's transaction id", {"type": "string", "minLength": 1}),
               "id_token": ("the id token value", {"type": "string", "minLength": 1}),
               "transformer_id": ("the transformer (grid connection) id", {"type": "string", "minLength": 1}),
               "evse_id": ("the EVSE id", {"type": "integer", "minimum": 1}),
               "action": ("an OCPP 2.0.1 action the central system can send", {"type": "string"}),
               "reservation_id": ("the reservation id the central system gave it", {"type": "string"}),
               "name": ("the tariff plan's name", {"type": "string", "minLength": 1})}

_COMMON = {"401": _error("no token or an invalid token"),
           "403": _error("the token's scope does not allow this")}


def op(summary: str, responses: dict[str, Any], *, tag: str, params: tuple[str, ...] = (),
       query: list[dict[str, Any]] | None = None, body: str | None = None, public: bool = False,
       description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "tags": [tag], "operationId": None}
    if description:
        out["description"] = description
    parameters = [{"name": p, "in": "path", "required": True, "description": _PATH_PARAM[p][0],
                   "schema": _PATH_PARAM[p][1]} for p in params] + (query or [])
    if parameters:
        out["parameters"] = parameters
    if body is not None:
        out["requestBody"] = {"required": True, "content": _json(_ref(_schema_name(body)))}
        responses = {**responses, "400": _error("the body is not JSON"),
                     "422": _error("the body breaks its schema (the answer names the field)")}
    if public:
        out["security"] = []
    else:
        responses = {**_COMMON, **responses}
    out["responses"] = dict(sorted(responses.items()))
    return out


def _schema_name(body: str) -> str:
    return "".join(part.capitalize() for part in body.replace("command:", "command-").replace("_", "-").split("-")) \
        + "Body"


def _q(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_NOT_FOUND_STATION = _error("unknown station")
_COMMAND_ERRORS = {"404": _NOT_FOUND_STATION,
                   "409": _error("the station is known but not connected (or disconnected before answering)"),
                   "502": _error("the station answered with a CALLERROR (its code is in 'code')"),
                   "504": _error("the station did not answer in time")}
_GRID_OFF = {"503": _error("grid control is not configured")}


def _typed_command_paths() -> dict[str, Any]:
    out = {}
    for name, (action, _) in TYPED.items():
        out[f"/api/stations/{{station_id}}/commands/{name}"] = {"post": op(
            f"Send {action}", {**_ok("the station's answer", _ref("CommandResult")), **_COMMAND_ERRORS},
            tag="commands", params=("station_id",), body=f"command:{name}")}
    return out


_OPS_OFF = {"503": _error("the 2.0.1 operations are not configured")}
_STATE_VIEWS = {
    "local-list": "The station's local authorisation list as it confirmed it (version 0: none)",
    "firmware": "Firmware updates and publications with their status history",
    "certificates": "Certificates installed (asked and reported) and issued to the station",
    "logs": "Log uploads asked with GetLog and their status history",
    "monitoring": "Monitors set or reported, the monitoring base and level",
    "customer-information": "Customer information requests and the data the station reported",
    "display-messages": "Display messages set (with the station's verdict) and the station's last report",
}


def _operation_paths() -> dict[str, Any]:
    """Issue 17's typed commands (their results kept) and the state they leave behind."""
    out: dict[str, Any] = {}
    for name, (action, _) in OPERATIONS.items():
        out[f"/api/stations/{{station_id}}/commands/{name}"] = {"post": op(
            f"Send {action} (what it changes is kept)",
            {**_ok("the station's answer", _ref("CommandResult")), **_COMMAND_ERRORS, **_OPS_OFF},
            tag="commands", params=("station_id",), body=f"command:{name}")}
    for view, summary in _STATE_VIEWS.items():
        out[f"/api/stations/{{station_id}}/{view}"] = {"get": op(
            summary, {**_ok("the kept state", {"type": "object"}), "404": _NOT_FOUND_STATION, **_OPS_OFF},
            tag="stations", params=("station_id",))}
    out["/api/reservations"] = {"get": op(
        "Reservations, oldest first", {**_ok("reservations", {"type": "object", "properties": {
            "reservations": {"type": "array", "items": {"type": "object"}}}}), **_OPS_OFF,
            "400": _error("a query parameter is invalid")},
        tag="reservations", query=[_q("station_id", "only this station", {"type": "string"}),
                                   _q("active", "only those still holding an EVSE", {"type": "boolean"}),
                                   _q("limit", "at most this many (default 1000)",
                                      {"type": "integer", "minimum": 1, "maximum": 10000})])}
    out["/api/reservations/{reservation_id}"] = {"get": op(
        "One reservation", {**_ok("the reservation", {"type": "object"}), "404": _error("unknown reservation"),
                            **_OPS_OFF}, tag="reservations", params=("reservation_id",))}
    out["/api/tariffs"] = {
        "get": op("Tariff plans in force", _ok("currency, default plan and plans", {"type": "object"}),
                  tag="tariffs"),
        "post": op("Add or replace a tariff plan", {**_ok("replaced", {"type": "object"}),
                                                    **_ok("added", {"type": "object"}, "201"),
                                                    "503": _error("tariffs are not configured")},
                   tag="tariffs", body="tariff_plan")}
    out["/api/tariffs/{name}"] = {"delete": op(
        "Remove an operator's tariff plan", {"204": {"description": "removed"}, "404": _error("unknown plan"),
                                             "409": _error("the plan comes from the config file"),
                                             "503": _error("tariffs are not configured")},
        tag="tariffs", params=("name",))}
    out["/api/stations/{station_id}/hold"] = {"post": op(
        "Hold a station: Pending from its next boot on, until released", {
            **_ok("held", _ref("StationSummary")), "404": _NOT_FOUND_STATION}, tag="stations", params=("station_id",),
        body="hold_station")}
    out["/api/stations/{station_id}/release"] = {"post": op(
        "Release a held station (a connected Pending one is asked to boot again)", {
            **_ok("released", _ref("StationSummary")), "404": _NOT_FOUND_STATION}, tag="stations",
        params=("station_id",))}
    out["/api/stations/{station_id}/security-events"] = {"get": op(
        "Security events of the station, newest first", {**_ok("events", {"type": "object"}),
                                                         "404": _NOT_FOUND_STATION,
                                                         "400": _error("a query parameter is invalid")},
        tag="stations", params=("station_id",), query=[_q("limit", "at most this many (default 1000)", {
            "type": "integer", "minimum": 1, "maximum": 10000})])}
    out["/api/stations/{station_id}/password"] = {"post": op(
        "Rotate a profile-1/2 station's password (A01)",
        {**_ok("the station's verdict: Accepted, RebootRequired, Uncertain or Rejected", {"type": "object"}),
         "404": _NOT_FOUND_STATION, "409": _error("not connected, or no password to rotate")},
        tag="stations", params=("station_id",), body="rotate_password")}
    return out


PATHS: dict[str, Any] = {
    "/": {"get": op("The live dashboard (HTML)", {"200": {"description": "the page",
                                                          "content": {"text/html": {"schema": {"type": "string"}}}}},
                    tag="dashboard", public=True)},
    "/openapi.json": {"get": op("This document", _ok("the OpenAPI document", {"type": "object"}), tag="meta",
                                public=True)},
    "/health/live": {"get": op("Liveness", _ok("the process answers", {"type": "object"}), tag="health",
                               public=True)},
    "/health/ready": {"get": op("Readiness", {**_ok("ready", {"type": "object"}),
                                              "503": {"description": "not ready",
                                                      "content": _json({"type": "object"})}},
                                tag="health", public=True)},
    "/metrics": {"get": op("Prometheus metrics", {"200": {"description": "text exposition format 0.0.4",
                                                          "content": {"text/plain": {"schema": {"type": "string"}}}}},
                           tag="health",
                           description="Needs a read token unless api.metrics_public is true.")},
    "/api/stations": {
        "get": op("List stations", _ok("every station the daemon knows or has connected", {
            "type": "object", "properties": {"stations": {"type": "array", "items": _ref("StationSummary")}}}),
            tag="stations"),
        "post": op("Register a station", {**_ok("registered (already known)", _ref("StationSummary")),
                                          **_ok("registered (new)", _ref("StationSummary"), "201"),
                                          "503": _error("a password or profile needs the security module")},
                   tag="stations", body="register_station")},
    "/api/stations/{station_id}": {
        "get": op("A station in detail", {**_ok("boot info, connection, EVSEs and connectors, variables",
                                                _ref("StationDetail")), "404": _NOT_FOUND_STATION},
                  tag="stations", params=("station_id",)),
        "delete": op("Unregister a station (disconnects it)", {"204": {"description": "forgotten"},
                                                               "404": _NOT_FOUND_STATION},
                     tag="stations", params=("station_id",))},
    "/api/stations/{station_id}/block": {"post": op(
        "Block a station (disconnects it; its boots are Rejected)",
        {**_ok("blocked", _ref("StationSummary")), "404": _NOT_FOUND_STATION}, tag="stations",
        params=("station_id",))},
    "/api/stations/{station_id}/unblock": {"post": op(
        "Unblock a station", {**_ok("unblocked", _ref("StationSummary")), "404": _NOT_FOUND_STATION,
                              "409": _error("the station is not blocked")}, tag="stations", params=("station_id",))},
    "/api/stations/{station_id}/trace": {"get": op(
        "The station's last OCPP frames (secrets redacted)",
        {**_ok("frames, oldest first", {"type": "object", "properties": {"frames": {"type": "array", "items": {
            "type": "object", "properties": {"at": {"type": "string"}, "direction": {"enum": ["in", "out"]},
                                             "frame": {"type": "string"}}}}}}),
         "404": _NOT_FOUND_STATION}, tag="stations", params=("station_id",))},
    "/api/transactions": {"get": op(
        "List transactions", _ok("newest first", {"type": "object", "properties": {
            "transactions": {"type": "array", "items": _ref("Transaction")}}}) | {
            "400": _error("a query parameter is invalid")},
        tag="transactions", query=[
            _q("station_id", "only this station", {"type": "string"}),
            _q("active", "only active (true) or finished (false) ones", {"type": "boolean"}),
            _q("since", "overlapping this period: ended at or after", {"type": "string", "format": "date-time"}),
            _q("until", "overlapping this period: started at or before", {"type": "string", "format": "date-time"}),
            _q("limit", "at most this many (default 100)", {"type": "integer", "minimum": 1, "maximum": 10000})])},
    "/api/transactions/{station_id}/{transaction_id}": {"get": op(
        "A transaction with its events, energy and power series",
        {**_ok("the transaction", _ref("TransactionDetail")), "404": _error("no such transaction")},
        tag="transactions", params=("station_id", "transaction_id"))},
    "/api/commands": {"get": op("The typed commands and the generic actions that can be sent",
                                _ok("typed command bodies and generic action names", {"type": "object"}),
                                tag="commands")},
    **_typed_command_paths(),
    **_operation_paths(),
    "/api/stations/{station_id}/call/{action}": {"post": op(
        "Send any OCPP 2.0.1 action with its JSON payload",
        {**_ok("the station's answer", _ref("CommandResult")), **_COMMAND_ERRORS,
         "404": _error("unknown station, or not an action the central system sends")},
        tag="commands", params=("station_id", "action"), body="ocpp_payload",
        description="The payload is validated against the official OCPP 2.0.1 schema before it is sent.")},
    "/api/id-tokens": {
        "get": op("List id tokens", _ok("all tokens", {"type": "object", "properties": {
            "id_tokens": {"type": "array", "items": _ref("IdToken")}}}), tag="id-tokens"),
        "post": op("Add or replace an id token", {**_ok("replaced", _ref("IdToken")),
                                                  **_ok("added", _ref("IdToken"), "201")},
                   tag="id-tokens", body="id_token")},
    "/api/id-tokens/{id_token}": {
        "get": op("One id token", {**_ok("the token", _ref("IdToken")), "404": _error("unknown token")},
                  tag="id-tokens", params=("id_token",)),
        "delete": op("Remove an id token", {"204": {"description": "removed"}, "404": _error("unknown token")},
                     tag="id-tokens", params=("id_token",))},
    "/api/id-tokens/{id_token}/block": {"post": op(
        "Block an id token", {**_ok("blocked", _ref("IdToken")), "404": _error("unknown token")},
        tag="id-tokens", params=("id_token",))},
    "/api/grid": {"get": op("Transformers, limits in force, measured and planned load, sessions",
                            {**_ok("the grid controller's snapshot", {"type": "object"}), **_GRID_OFF}, tag="grid")},
    "/openadr/notify": {"post": op(
        "OpenADR 3 notification from the DSO's VTN (the VEN's webhook)",
        {**_ok("taken: the VEN polls the VTN now", {"type": "object"}),
         "400": _error("not an OpenADR notification"), "401": _error("missing or wrong subscription bearer token"),
         "404": _error("no OpenADR VEN with a webhook is configured"), "413": _error("notification too large")},
        tag="grid", public=True,
        description="Authenticated by the bearer token the VEN gave the VTN in its subscription, not by an "
                    "operator token. The body only wakes the VEN; it re-reads programs and events itself.")},
    "/api/grid/events": {"get": op(
        "Recent grid events (signals, pushes, rejections, safe mode)",
        {**_ok("oldest first", {"type": "object", "properties": {"events": {"type": "array"}}}), **_GRID_OFF,
         "400": _error("a query parameter is invalid")},
        tag="grid", query=[_q("limit", "at most this many (default 200)",
                              {"type": "integer", "minimum": 1, "maximum": 10000})])},
    "/api/grid/transformers/{transformer_id}/history": {"get": op(
        "A group's load history: total, EV and non-EV load, limit, planned and peak per slot",
        {**_ok("one column per field; t: each slot's start (Unix seconds); null: not known then",
               {"type": "object", "properties": {
                   "transformer": {"type": "string"}, "resolution_s": {"type": "number"},
                   "span_s": {"type": "number"},
                   **{name: {"type": "array", "items": {"type": ["number", "null"]}}
                      for name in ("t", "load_kw", "ev_kw", "non_ev_kw", "limit_kw", "planned_kw", "peak_kw")}}}),
         **_GRID_OFF, "404": _error("unknown transformer"), "400": _error("since is not a time or a duration")},
        tag="grid", params=("transformer_id",),
        query=[_q("since", "ISO 8601 time (with zone) or seconds back from now; default: the whole kept span "
                           "(grid.history.hours)", {"type": "string"})])},
    "/api/grid/transformers/{transformer_id}/limit": {
        "post": op("Post a limit (same format as the MQTT signal); answered once it is stored",
                   {**_ok("accepted", {"type": "object"}, "202"), **_GRID_OFF, "404": _error("unknown transformer")},
                   tag="grid", params=("transformer_id",), body="grid_limit"),
        "delete": op("Remove the limit of one source for good (default: the operator's)",
                     {**_ok("cleared", {"type": "object", "properties": {
                         "transformer_id": {"type": "string"}, "source": {"type": "string"},
                         "cleared": {"type": "string"}}}), **_GRID_OFF,
                      "404": _error("unknown transformer, or no limit of that source in force")},
                     tag="grid", params=("transformer_id",),
                     query=[_q("source", "whose limit (default: operator)", {"type": "string"})])},
    "/api/grid/sessions/{station_id}/{evse_id}/need": {"post": op(
        "Set a session's energy need, guaranteed minimum and departure",
        {**_ok("updated", {"type": "object"}), **_GRID_OFF, "404": _error("no session on that EVSE"),
         "400": _error("evse_id is not an integer")},
        tag="grid", params=("station_id", "evse_id"), body="session_need")},
    "/api/events": {"get": op(
        "Live event stream (server-sent events)",
        {"200": {"description": "text/event-stream; each event is one 'data:' line of JSON "
                                "{seq, kind, station_id, at, data}",
                 "content": {"text/event-stream": {"schema": {"type": "string"}}}},
         "400": _error("a query parameter is invalid")},
        tag="events", query=[_q("kinds", "comma-separated kind prefixes, e.g. grid.,transaction.", {"type": "string"}),
                             _q("station_id", "only this station's events", {"type": "string"})])},
}


def _operation_ids(paths: dict[str, Any]) -> None:
    for path, ops in paths.items():
        for method, spec in ops.items():
            words = [w for w in path.replace("{", "").replace("}", "").replace("-", "_").split("/") if w]
            spec["operationId"] = "_".join([method, *words]) if words else f"{method}_root"


_operation_ids(PATHS)

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Netbewust operator API", "version": "1.0.0",
             "description": "Stations, transactions, commands, id tokens and grid control of the Netbewust "
                            "central system. Send 'Authorization: Bearer <token>'; read tokens may GET, admin "
                            "tokens may do everything. Errors are JSON {error, field?, code?}."},
    "servers": [{"url": "/"}],
    "security": [{"bearerAuth": []}],
    "tags": [{"name": t} for t in ("stations", "transactions", "commands", "reservations", "tariffs", "id-tokens",
                                   "grid", "events", "health", "dashboard", "meta")],
    "paths": PATHS,
    "components": {
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                           "description": "an API token (read or admin scope)"}},
        "schemas": {
            "Error": s.ERROR, "StationSummary": s.STATION_SUMMARY, "StationDetail": s.STATION_DETAIL,
            "Transaction": s.TRANSACTION, "TransactionDetail": s.TRANSACTION_DETAIL, "IdToken": s.ID_TOKEN,
            "CommandResult": s.COMMAND_RESULT,
            **{_schema_name(name): schema for name, schema in s.BODIES.items()},
        },
    },
}


@routes.get("/openapi.json", PUBLIC)
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(DOCUMENT)

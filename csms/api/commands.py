"""Commands to stations: every typed command of the daemon plus the generic OCPP action path.

Outcomes map to HTTP statuses the same way for every command (documented in docs/operator-api.md):
unknown station 404, known but not connected 409, invalid request 422 (with the offending field),
station CALLERROR 502 (with its code), no answer in time 504.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from csms.api.auth import ADMIN
from csms.api.http import ApiContext, ApiError, Routes, context_of, json_response, principal_of, read_body
from csms.api.schemas import COMMAND_BODIES
from csms.api.stations import known_station
from csms.cluster import ForwardFailed
from csms.domain.records import StationRecord
from csms.domain.registration import VERSION_KEY
from csms.interfaces import Commands
from csms.ocpp.v201.operations import BodyError
from csms.protocol import schemas
from csms.protocol.errors import CallTimeout, OcppError, StationOffline
from csms.protocol.version import ProtocolVersion

log = logging.getLogger("csms.api")
routes = Routes()
_request_ids = itertools.count(int(time.time()) % 1_000_000)

Typed = Callable[[Commands, str, dict[str, Any]], Awaitable[dict[str, Any]]]

# name -> (OCPP action, how to call the typed command with the validated body)
TYPED: dict[str, tuple[str, Typed]] = {
    "request-start-transaction": ("RequestStartTransaction", lambda c, s, b: c.request_start_transaction(
        s, b.get("remote_start_id", next(_request_ids)),
        {"idToken": b["id_token"], "type": b.get("id_token_type", "Central")},
        b.get("evse_id"), b.get("charging_profile"))),
    "request-stop-transaction": ("RequestStopTransaction",
                                 lambda c, s, b: c.request_stop_transaction(s, b["transaction_id"])),
    "reset": ("Reset", lambda c, s, b: c.reset(s, b.get("type", "OnIdle"), b.get("evse_id"))),
    "change-availability": ("ChangeAvailability", lambda c, s, b: c.change_availability(
        s, b["status"], b.get("evse_id"), b.get("connector_id"))),
    "unlock-connector": ("UnlockConnector", lambda c, s, b: c.unlock_connector(s, b["evse_id"], b["connector_id"])),
    "trigger-message": ("TriggerMessage", lambda c, s, b: c.trigger_message(
        s, b["requested_message"], b.get("evse_id"), b.get("connector_id"))),
    "get-variables": ("GetVariables", lambda c, s, b: c.get_variables(s, b["items"])),
    "set-variables": ("SetVariables", lambda c, s, b: c.set_variables(s, b["items"])),
    "get-base-report": ("GetBaseReport", lambda c, s, b: c.get_base_report(
        s, b.get("request_id", next(_request_ids)), b.get("report_base", "FullInventory"))),
    "set-charging-profile": ("SetChargingProfile",
                             lambda c, s, b: c.set_charging_profile(s, b["evse_id"], b["profile"])),
    "clear-charging-profile": ("ClearChargingProfile", lambda c, s, b: c.clear_charging_profile(
        s, profile_id=b.get("profile_id"), evse_id=b.get("evse_id"), purpose=b.get("purpose"),
        stack_level=b.get("stack_level"))),
    "get-charging-profiles": ("GetChargingProfiles", lambda c, s, b: c.get_charging_profiles(
        s, b.get("request_id", next(_request_ids)), evse_id=b.get("evse_id"), purpose=b.get("purpose"),
        profile_ids=b.get("profile_ids"), stack_level=b.get("stack_level"), limit_source=b.get("limit_source"))),
    "get-composite-schedule": ("GetCompositeSchedule", lambda c, s, b: c.get_composite_schedule(
        s, b["evse_id"], b["duration_s"], b.get("unit"))),
    "get-transaction-status": ("GetTransactionStatus",
                               lambda c, s, b: c.get_transaction_status(s, b.get("transaction_id"))),
}
assert set(TYPED) == set(COMMAND_BODIES), "every typed command needs a body schema"


def csms_actions(version: ProtocolVersion) -> list[str]:
    """Actions the central system may send: those with a schema that only stations do not send."""
    return sorted(a for a in schemas.known_actions(version.schema_dir)
                  if a in version.both_ways or a not in version.station_only)


def station_version(context: ApiContext, station_id: str, record: StationRecord | None) -> ProtocolVersion:
    """The version a station speaks: its connection's, else the one it last connected with, else the default."""
    conn = context.connections.get(station_id)
    if conn is not None:
        return conn.version
    stored = record.extra.get(VERSION_KEY) if record is not None else None
    return context.versions.get(stored, context.version) if isinstance(stored, str) else context.version


def _is_local_validation(exc: OcppError, action: str) -> bool:
    """Our own schema check of the request (raised before sending), as opposed to the station's CALLERROR."""
    return exc.description.startswith(f"{action}Request: ") and set(exc.details) == {"field", "rule"}


async def run_command(request: web.Request, action: str, send: Callable[[], Awaitable[dict[str, Any]]],
                      forward: dict[str, Any] | None = None) -> web.Response:
    """Send one command for an API request and map every outcome to its HTTP status. ``forward``: the
    command as another node runs it (``kind`` typed with ``name`` and ``body``, or call with ``action``
    and ``payload``), when the station's socket is on another node of the cluster."""
    context = context_of(request)
    station_id = request.match_info["station_id"]
    if station_id not in context.connections:
        cluster = context.cluster
        node = await cluster.owner(station_id) if cluster is not None and forward is not None else None
        if cluster is None or forward is None or node is None or node == cluster.node_id:
            raise ApiError(409, f"station {station_id!r} is not connected")
        message = {"station_id": station_id, **forward}

        async def send() -> dict[str, Any]:
            assert cluster is not None
            return await cluster.forward(node, message)
    started = time.perf_counter()
    try:
        response = await send()
    except ForwardFailed as exc:
        raise ApiError(502, f"the node holding station {station_id!r} failed to run {action}: {exc}") from None
    except BodyError as exc:  # an operation's body, checked where it ran (another node)
        raise ApiError(422, f"invalid {action} request: {exc.message}", field=exc.field) from None
    except StationOffline:
        raise ApiError(409, f"station {station_id!r} disconnected before it answered {action}") from None
    except CallTimeout as exc:
        raise ApiError(504, str(exc)) from None
    except OcppError as exc:
        if _is_local_validation(exc, action):
            raise ApiError(422, f"invalid {action} request: {exc.description.split(': ', 1)[1]}",
                           field=exc.details["field"], code=exc.code) from None
        raise ApiError(502, f"station {station_id!r} answered {action} with CALLERROR {exc.code}",
                       code=exc.code, description=exc.description, details=exc.details) from None
    latency_ms = (time.perf_counter() - started) * 1000.0
    log.info("operator %s: %s %s -> %s", principal_of(request), station_id, action,
             response.get("status", "answered") if isinstance(response, dict) else "answered")
    return json_response({"station_id": station_id, "action": action, "response": response,
                          "latency_ms": round(latency_ms, 3)})


def _profile_rules(evse_id: int, profile: dict[str, Any], field: str) -> None:
    """What OCPP 2.0.1 asks of a charging profile the CSMS sends (K01), beyond its schema."""
    purpose, kind = profile.get("chargingProfilePurpose"), profile.get("chargingProfileKind")
    if purpose == "TxProfile" and "transactionId" not in profile:
        raise ApiError(422, "a TxProfile names the transaction it is for (K01.FR.03)", field=f"{field}.transactionId")
    if purpose == "ChargingStationMaxProfile":
        if kind == "Relative":
            raise ApiError(422, "a ChargingStationMaxProfile cannot be Relative (K01.FR.38)",
                           field=f"{field}.chargingProfileKind")
        if evse_id != 0:
            raise ApiError(422, "a ChargingStationMaxProfile is set on EVSE 0", field="evse_id")
    for n, schedule in enumerate(profile.get("chargingSchedule") or []):
        periods = schedule.get("chargingSchedulePeriod") if isinstance(schedule, dict) else None
        if periods and isinstance(periods[0], dict) and periods[0].get("startPeriod") != 0:
            raise ApiError(422, "the first period of a schedule starts at 0 (K01.FR.31)",
                           field=f"{field}.chargingSchedule[{n}].chargingSchedulePeriod[0].startPeriod")


def check_typed(name: str, body: dict[str, Any]) -> None:
    """The rules of OCPP 2.0.1 a typed command keeps beyond its body schema (422 naming the field)."""
    if name == "set-charging-profile" and isinstance(body.get("profile"), dict):
        _profile_rules(body["evse_id"], body["profile"], "profile")
    elif name == "request-start-transaction" and isinstance(body.get("charging_profile"), dict):
        profile = body["charging_profile"]
        if profile.get("chargingProfilePurpose") != "TxProfile":
            raise ApiError(422, "a remote start's charging profile is a TxProfile (F01.FR.09)",
                           field="charging_profile.chargingProfilePurpose")
        if "transactionId" in profile:
            raise ApiError(422, "a remote start's charging profile has no transactionId yet (F01.FR.11)",
                           field="charging_profile.transactionId")
    elif name == "trigger-message" and body["requested_message"] == "StatusNotification" and "evse_id" not in body:
        raise ApiError(422, "a StatusNotification is triggered for an EVSE and connector (F06.FR.13)",
                       field="evse_id")
    elif name == "get-charging-profiles" and not any(k in body for k in ("profile_ids", "stack_level", "purpose",
                                                                         "limit_source")):
        raise ApiError(422, "give profile_ids or at least one of stack_level, purpose, limit_source (K09.FR.03)",
                       field="purpose")
    elif name == "clear-charging-profile" and not any(k in body for k in ("profile_id", "evse_id", "purpose",
                                                                          "stack_level")):
        raise ApiError(422, "give profile_id or at least one of evse_id, purpose, stack_level (K10.FR.02)",
                       field="profile_id")


def _typed_handler(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    action, fn = TYPED[name]

    async def handler(request: web.Request) -> web.Response:
        await known_station(request)
        body = await read_body(request, f"command:{name}")
        check_typed(name, body)
        commands = context_of(request).commands
        return await run_command(request, action, lambda: fn(commands, request.match_info["station_id"], body),
                                 {"kind": "typed", "name": name, "body": body})
    handler.__name__ = handler.__qualname__ = f"command_{name.replace('-', '_')}"
    handler.__doc__ = f"Send {action} (typed: snake_case body, the payload is built by the daemon)."
    return handler


for _name in TYPED:  # one route per typed command, so each has its own documented body
    routes.post(f"/api/stations/{{station_id}}/commands/{_name}", ADMIN, body=f"command:{_name}")(
        _typed_handler(_name))


@routes.post("/api/stations/{station_id}/call/{action}", ADMIN, body="ocpp_payload")
async def generic_call(request: web.Request) -> web.Response:
    """Any CSMS-initiated OCPP action of the station's version with its JSON payload, validated against
    that version's schema before it is sent."""
    context = context_of(request)
    action = request.match_info["action"]
    station_id = request.match_info["station_id"]
    record = await known_station(request)
    version = station_version(context, station_id, record)
    if action not in csms_actions(version):
        elsewhere = sorted(v.subprotocol for v in context.versions.values() if action in csms_actions(v))
        if elsewhere:
            raise ApiError(422, f"{action!r} does not exist in {version.subprotocol}, the version station "
                                f"{station_id!r} speaks (it is an action of {', '.join(elsewhere)})", field="action")
        raise ApiError(404, f"{action!r} is not an OCPP action the central system can send")
    payload = await read_body(request, "ocpp_payload")
    conn = context.connections.get(station_id)
    if conn is not None:
        try:
            schemas.validate(conn.version.schema_dir, action, "Request", payload)
        except OcppError as exc:
            raise ApiError(422, f"invalid {action} request: {exc.description.split(': ', 1)[-1]}",
                           field=exc.details.get("field", "<payload>"), code=exc.code) from None
    return await run_command(request, action, lambda: context.commands.call(station_id, action, payload),
                             {"kind": "call", "action": action, "payload": payload})

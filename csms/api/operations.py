"""The OCPP 2.0.1 operations of issue 17 through the API: typed commands whose results the central
system keeps, and the state they leave behind (local lists, reservations, firmware, certificates,
logs, monitoring, customer information, display messages).

Typed commands share the path and the error mapping of csms/api/commands.py (404 unknown station,
409 not connected, 422 with the field, 502 CALLERROR, 504 no answer); a rule beyond the schema
(a duplicate token, a signature without certificate ...) is a 422 naming the body's field.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from csms.api.auth import ADMIN
from csms.api.commands import TYPED, csms_actions, run_command
from csms.api.http import ApiError, Routes, context_of, json_response, principal_of, query_bool, query_int, read_body
from csms.api.schemas import COMMAND_BODIES
from csms.api.stations import known_station
from csms.billing import Billing
from csms.domain import operations as state
from csms.domain.tariffs import TariffError
from csms.interfaces import Commands
from csms.ocpp.v201.operations import BODIES as OPERATION_BODIES
from csms.ocpp.v201.operations import BodyError
from csms.operations import Operations
from csms.security.credentials import RegistrationError
from csms.security.rotation import RotationError, rotate_password

log = logging.getLogger("csms.api")

routes = Routes()
Payload = dict[str, Any]
Run = Callable[[Operations, str, Mapping[str, Any]], Awaitable[Payload]]

# name -> (OCPP action, what runs it)
OPERATIONS: dict[str, tuple[str, Run]] = {
    "get-report": ("GetReport", lambda o, s, b: o.simple(s, "get-report", b)),
    "set-network-profile": ("SetNetworkProfile", lambda o, s, b: o.simple(s, "set-network-profile", b)),
    "clear-cache": ("ClearCache", lambda o, s, b: o.simple(s, "clear-cache", b)),
    "data-transfer": ("DataTransfer", lambda o, s, b: o.simple(s, "data-transfer", b)),
    "send-local-list": ("SendLocalList", lambda o, s, b: o.send_local_list(s, b)),
    "get-local-list-version": ("GetLocalListVersion", lambda o, s, b: o.get_local_list_version(s)),
    "reserve-now": ("ReserveNow", lambda o, s, b: o.reserve_now(s, b)),
    "cancel-reservation": ("CancelReservation", lambda o, s, b: o.cancel_reservation(s, b)),
    "update-firmware": ("UpdateFirmware", lambda o, s, b: o.update_firmware(s, b)),
    "publish-firmware": ("PublishFirmware", lambda o, s, b: o.publish_firmware(s, b)),
    "unpublish-firmware": ("UnpublishFirmware", lambda o, s, b: o.unpublish_firmware(s, b)),
    "install-certificate": ("InstallCertificate", lambda o, s, b: o.install_certificate(s, b)),
    "get-installed-certificate-ids": ("GetInstalledCertificateIds",
                                      lambda o, s, b: o.get_installed_certificate_ids(s, b)),
    "delete-certificate": ("DeleteCertificate", lambda o, s, b: o.delete_certificate(s, b)),
    "get-log": ("GetLog", lambda o, s, b: o.get_log(s, b)),
    "set-variable-monitoring": ("SetVariableMonitoring", lambda o, s, b: o.set_variable_monitoring(s, b)),
    "set-monitoring-base": ("SetMonitoringBase", lambda o, s, b: o.set_monitoring_base(s, b)),
    "set-monitoring-level": ("SetMonitoringLevel", lambda o, s, b: o.set_monitoring_level(s, b)),
    "clear-variable-monitoring": ("ClearVariableMonitoring", lambda o, s, b: o.clear_variable_monitoring(s, b)),
    "get-monitoring-report": ("GetMonitoringReport", lambda o, s, b: o.get_monitoring_report(s, b)),
    "customer-information": ("CustomerInformation", lambda o, s, b: o.customer_information(s, b)),
    "set-display-message": ("SetDisplayMessage", lambda o, s, b: o.set_display_message(s, b)),
    "get-display-messages": ("GetDisplayMessages", lambda o, s, b: o.get_display_messages(s, b)),
    "clear-display-message": ("ClearDisplayMessage", lambda o, s, b: o.clear_display_message(s, b)),
}


@routes.get("/api/commands")
async def list_commands(request: web.Request) -> web.Response:
    """What can be sent: every typed command (the classic ones and the operations) with its body
    schema, and the generic actions (of the version of ``?station_id=``'s connection, else 2.0.1)."""
    typed = {name: {"action": action, "body": COMMAND_BODIES[name]} for name, (action, _) in TYPED.items()}
    typed.update({name: {"action": action, "body": OPERATION_BODIES[name]} for name, (action, _) in OPERATIONS.items()})
    context = context_of(request)
    link = context.connections.get(request.query.get("station_id", ""))
    version = link.version if link is not None else context.version
    return json_response({"typed": typed, "version": version.subprotocol, "generic_actions": csms_actions(version)})


def operations_of(request: web.Request) -> Operations:
    operations = context_of(request).operations
    if operations is None:
        raise ApiError(503, "the 2.0.1 operations are not configured")
    return operations


def _operation_handler(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    action, run = OPERATIONS[name]

    async def handler(request: web.Request) -> web.Response:
        await known_station(request)
        body = await read_body(request, f"command:{name}")
        operations = operations_of(request)
        station_id = request.match_info["station_id"]

        async def send() -> Payload:
            try:
                return await run(operations, station_id, body)
            except BodyError as exc:
                raise ApiError(422, f"invalid {name} request: {exc.message}", field=exc.field) from None
        return await run_command(request, action, send, {"kind": "operation", "name": name, "body": body})
    handler.__name__ = handler.__qualname__ = f"command_{name.replace('-', '_')}"
    handler.__doc__ = f"Send {action} (typed: snake_case body; what it changes is kept)."
    return handler


async def execute_forwarded(commands: Commands, operations: Operations | None, request: Payload) -> Payload:
    """Run a command another node's API forwarded (it validated the body; the station's socket is here):
    ``kind`` typed (a classic typed command), operation (a 2.0.1 operation) or call (the generic path)."""
    station_id, kind = request["station_id"], request["kind"]
    if kind == "typed":
        return await TYPED[request["name"]][1](commands, station_id, request["body"])
    if kind == "operation":
        if operations is None:
            raise RuntimeError("the 2.0.1 operations are not configured on this node")
        return await OPERATIONS[request["name"]][1](operations, station_id, request["body"])
    return await commands.call(station_id, request["action"], request["payload"])


for _name in OPERATIONS:
    routes.post(f"/api/stations/{{station_id}}/commands/{_name}", ADMIN, body=f"command:{_name}")(
        _operation_handler(_name))


async def _document(request: web.Request, kind: str, template: Payload) -> web.Response:
    await known_station(request)
    station_id = request.match_info["station_id"]
    doc = await operations_of(request).document(station_id, kind)
    return json_response({"station_id": station_id, **(doc if doc is not None else template)})


@routes.get("/api/stations/{station_id}/local-list")
async def local_list(request: web.Request) -> web.Response:
    """The station's local authorisation list as it confirmed it (version 0: none), with each token's
    record as the central system holds it now."""
    await known_station(request)
    station_id = request.match_info["station_id"]
    doc = await operations_of(request).document(station_id, state.LOCAL_LIST) or dict(state.LOCAL_LIST_TEMPLATE)
    tokens = []
    for token in doc["id_tokens"]:
        record = await context_of(request).store.get_id_token(token)
        tokens.append({"id_token": token, "type": record.type if record else None,
                       "status": record.status if record else None, "group_id": record.group_id if record else None})
    return json_response({"station_id": station_id, **doc, "id_tokens": tokens})


@routes.get("/api/stations/{station_id}/firmware")
async def firmware(request: web.Request) -> web.Response:
    """Firmware updates and publications with their status history."""
    return await _document(request, state.FIRMWARE, state.FIRMWARE_TEMPLATE)


@routes.get("/api/stations/{station_id}/certificates")
async def certificates(request: web.Request) -> web.Response:
    """Certificates installed (asked and reported) and issued to the station."""
    return await _document(request, state.CERTIFICATES, state.CERTIFICATES_TEMPLATE)


@routes.get("/api/stations/{station_id}/logs")
async def logs(request: web.Request) -> web.Response:
    """Log uploads asked with GetLog and their status history."""
    return await _document(request, state.LOGS, state.LOGS_TEMPLATE)


@routes.get("/api/stations/{station_id}/monitoring")
async def monitoring(request: web.Request) -> web.Response:
    """Monitors set or reported, the monitoring base and level."""
    return await _document(request, state.MONITORING, state.MONITORING_TEMPLATE)


@routes.get("/api/stations/{station_id}/customer-information")
async def customer_information(request: web.Request) -> web.Response:
    """Customer information requests and the data the station reported."""
    return await _document(request, state.CUSTOMER_INFORMATION, state.CUSTOMER_TEMPLATE)


@routes.get("/api/stations/{station_id}/display-messages")
async def display_messages(request: web.Request) -> web.Response:
    """Messages set (with the station's verdict) and the last report of the station."""
    return await _document(request, state.DISPLAY_MESSAGES, state.DISPLAY_TEMPLATE)


@routes.get("/api/reservations")
async def list_reservations(request: web.Request) -> web.Response:
    """Reservations, oldest first; ``active``: only those still holding an EVSE."""
    limit = query_int(request, "limit", 1000, 1, 10000) or 1000
    found = await operations_of(request).reservations(request.query.get("station_id") or None,
                                                      query_bool(request, "active"), limit)
    return json_response({"reservations": found})


@routes.get("/api/reservations/{reservation_id}")
async def get_reservation(request: web.Request) -> web.Response:
    raw = request.match_info["reservation_id"]
    found = await operations_of(request).reservation(int(raw)) if raw.isdigit() else None
    if found is None:
        raise ApiError(404, f"unknown reservation {raw!r}")
    return json_response(found)


# Tariffs (block I) ---------------------------------------------------------------------------------------
def _billing(request: web.Request) -> Billing:
    billing = context_of(request).billing
    if billing is None:
        raise ApiError(503, "tariffs are not configured")
    return billing


@routes.get("/api/tariffs")
async def list_tariffs(request: web.Request) -> web.Response:
    """The tariff plans in force: the config's and the operator's (by name, the operator's win)."""
    tariffs = await _billing(request).tariffs()
    if tariffs is None:
        return json_response({"currency": None, "default": None, "cost_update_interval_s": None, "plans": {}})
    return json_response({"currency": tariffs.currency, "default": tariffs.default,
                          "cost_update_interval_s": tariffs.cost_update_interval_s,
                          "plans": {name: plan.to_json() for name, plan in tariffs.plans.items()}})


@routes.post("/api/tariffs", ADMIN, body="tariff_plan")
async def put_tariff(request: web.Request) -> web.Response:
    """Add or replace a plan (201 when it is new); its groups may not be on another plan."""
    body = await read_body(request, "tariff_plan")
    try:
        plan, new = await _billing(request).put_plan(body)
    except TariffError as exc:
        raise ApiError(422, f"invalid tariff plan: {exc.message}", field=exc.field.rsplit(".", 1)[-1]) from None
    return json_response(plan.to_json(), 201 if new else 200)


@routes.delete("/api/tariffs/{name}", ADMIN)
async def delete_tariff(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        removed = await _billing(request).delete_plan(name)
    except TariffError as exc:
        raise ApiError(409, exc.message) from None
    if not removed:
        raise ApiError(404, f"unknown tariff plan {name!r}")
    return web.Response(status=204)


# Security (block A) ------------------------------------------------------------------------------------------
@routes.get("/api/stations/{station_id}/security-events")
async def security_events(request: web.Request) -> web.Response:
    """Security events the station reported and the central system recorded about it, newest first."""
    await known_station(request)
    limit = query_int(request, "limit", 1000, 1, 10000) or 1000
    events = await context_of(request).store.list_security_events(request.match_info["station_id"], limit)
    return json_response({"events": events})


@routes.post("/api/stations/{station_id}/password", ADMIN, body="rotate_password")
async def rotate(request: web.Request) -> web.Response:
    """A01: a new BasicAuthPassword for a connected profile-1/2 station (generated unless given; never
    returned). The central system accepts the new one once the station took it and the old one until the
    station logs in with the new one."""
    record = await known_station(request)
    body = await read_body(request, "rotate_password")
    context = context_of(request)
    station_id = request.match_info["station_id"]
    if record is None or record.security_profile not in (1, 2) or not record.password_hash:
        raise ApiError(409, f"station {station_id!r} has no password to rotate (register it at profile 1 or 2)")
    if station_id not in context.connections:
        raise ApiError(409, f"station {station_id!r} is not connected")
    try:
        result = await rotate_password(context, station_id, body.get("password"))
    except RegistrationError as exc:
        raise ApiError(422, str(exc), field="password") from None
    except RotationError as exc:
        return json_response({"station_id": station_id, "result": "Rejected", "reason": str(exc)})
    log.info("operator %s rotated the password of %s: %s", principal_of(request), station_id, result.value)
    return json_response({"station_id": station_id, "result": result.value})

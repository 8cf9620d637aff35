"""Stations: list, detail, register / block / unblock / unregister, and the OCPP message trace.

A station's websocket credentials (password hash, secret device-model values) are never part of
an answer: the detail only says whether a password is set.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from csms.api.auth import ADMIN
from csms.api.http import ApiContext, ApiError, Routes, context_of, iso, json_response, principal_of, read_body
from csms.domain.events import OperatorAction
from csms.domain.records import StationRecord
from csms.domain.registration import HOLD_KEY, VERSION_KEY
from csms.protocol.errors import CallTimeout, OcppError, StationOffline
from csms.protocol.redaction import REDACTED, SECRET_VARIABLES
from csms.security.credentials import register_station as register_credentials

log = logging.getLogger("csms.api")
routes = Routes()
CHARGING_PROFILES_SHOWN = 100  # a station's newest pushed profiles in its detail view


def station_summary(rec: StationRecord, connected: bool, version: str | None = None) -> dict[str, Any]:
    """``version``: the subprotocol of the live connection (else the one the station last connected with)."""
    return {"station_id": rec.station_id, "ocpp_version": version or rec.extra.get(VERSION_KEY),
            "registration": rec.registration, "registered": rec.registered,
            "connected": connected, "vendor": rec.vendor, "model": rec.model,
            "serial_number": rec.serial_number, "firmware_version": rec.firmware_version,
            "boot_reason": rec.boot_reason, "last_boot": iso(rec.last_boot), "last_seen": iso(rec.last_seen),
            "security_profile": rec.security_profile, "hold": rec.extra.get(HOLD_KEY) is not None}


def _evses(connectors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    evses: dict[int, list[dict[str, Any]]] = {}
    for c in connectors:
        evses.setdefault(c["evse_id"], []).append(
            {"connector_id": c["connector_id"], "status": c.get("status"), "updated_at": c.get("updated_at")})
    return [{"evse_id": e, "connectors": sorted(cs, key=lambda c: c["connector_id"])} for e, cs in sorted(evses.items())]


def _safe_variable(v: dict[str, Any]) -> dict[str, Any]:
    name = (v.get("variable") or {}).get("name") if isinstance(v.get("variable"), dict) else v.get("variable")
    if name in SECRET_VARIABLES:
        v = {**v, "value": REDACTED}
    return v


async def known_station(request: web.Request) -> StationRecord | None:
    """The station of the path, 404 if the daemon has never heard of it."""
    context = context_of(request)
    station_id = request.match_info["station_id"]
    rec = await context.store.get_station(station_id)
    if rec is None and station_id not in context.connections:
        raise ApiError(404, f"unknown station {station_id!r}")
    return rec


@routes.get("/api/stations")
async def list_stations(request: web.Request) -> web.Response:
    context = context_of(request)
    records = {r.station_id: r for r in await context.store.list_stations()}
    for sid in context.connections:  # connected but never booted: not in the store yet
        records.setdefault(sid, StationRecord(sid))
    elsewhere = await context.cluster.live_owners() if context.cluster is not None else {}
    out = []
    for r in sorted(records.values(), key=lambda r: r.station_id):
        conn = context.connections.get(r.station_id)
        out.append(station_summary(r, conn is not None or r.station_id in elsewhere,
                                   conn.version.subprotocol if conn is not None else None))
        if context.cluster is not None:  # which node (worker) holds its socket; None: no live node
            out[-1]["node"] = context.cluster.node_id if conn is not None else elsewhere.get(r.station_id)
    return json_response({"stations": out})


@routes.get("/api/stations/{station_id}")
async def station_detail(request: web.Request) -> web.Response:
    context = context_of(request)
    station_id = request.match_info["station_id"]
    rec = await known_station(request) or StationRecord(station_id)
    conn = context.connections.get(station_id)
    elsewhere = conn is None and context.cluster is not None and await context.cluster.owner(station_id) is not None
    out = station_summary(rec, conn is not None or elsewhere, conn.version.subprotocol if conn is not None else None)
    out["connection"] = None if conn is None else {
        "remote": conn.remote, "subprotocol": conn.version.subprotocol, "connected_at": iso(conn.connected_at),
        "accepted": conn.accepted}
    out["evses"] = _evses(await context.store.list_connectors(station_id))
    for evse in out["evses"]:  # what the car last said it needs (2.1: V2X parameters, controlMode ...)
        evse["ev_charging_needs"] = await context.store.latest_ev_charging_needs(station_id, evse["evse_id"])
    out["variables"] = [_safe_variable(v) for v in await context.store.list_variables(station_id)]
    # The newest only: the history grows with every push (thousands a month for a busy station).
    out["charging_profiles"] = await context.store.list_charging_profiles(station_id, newest=CHARGING_PROFILES_SHOWN)
    out["has_password"] = rec.password_hash is not None
    return json_response(out)


@routes.get("/api/stations/{station_id}/trace")
async def station_trace(request: web.Request) -> web.Response:
    await known_station(request)
    frames = context_of(request).station_trace(request.match_info["station_id"])
    return json_response({"frames": [{"at": at, "direction": d, "frame": f} for at, d, f in frames]})


@routes.post("/api/stations", ADMIN, body="register_station")
async def register_station(request: web.Request) -> web.Response:
    """Register (pre-approve) a station; with a security profile also its credentials.

    A password the security module generates is in this answer once and never again (only its
    hash is stored).
    """
    context = context_of(request)
    body = await read_body(request, "register_station")
    station_id, profile, password = body["station_id"], body.get("security_profile"), body.get("password")
    existing = await context.store.get_station(station_id)
    generated = None
    if password is not None and not profile:
        raise ApiError(422, "a password needs security_profile 1 or 2", field="security_profile")
    if profile:
        try:
            generated = await register_credentials(context.store, station_id, profile, password=password)
        except ValueError as exc:
            raise ApiError(422, str(exc), field="password" if password is not None else "security_profile") from None
    rec = await context.store.get_station(station_id) or StationRecord(station_id)
    rec.registered = True
    if rec.registration != "Blocked":
        rec.registration = "Accepted"
    await context.store.put_station(rec)
    log.info("operator %s registered station %s (profile %s)", principal_of(request), station_id, profile)
    context.bus.publish(OperatorAction(station_id=station_id, action="registered"))
    await boot_again(request, station_id)
    out = station_summary(rec, station_id in context.connections)
    if generated is not None:
        out["password"] = generated
    return json_response(out, 201 if existing is None or not existing.registered else 200)


async def _disconnect(context: ApiContext, station_id: str, reason: str) -> None:
    conn = context.connections.get(station_id)
    if conn is not None:
        conn.accepted = False
        await conn.close(1008, reason)


@routes.post("/api/stations/{station_id}/block", ADMIN)
async def block_station(request: web.Request) -> web.Response:
    """Block: the station is disconnected and every later boot is Rejected until unblocked."""
    context = context_of(request)
    station_id = request.match_info["station_id"]
    rec = await known_station(request) or StationRecord(station_id)
    rec.registration = "Blocked"
    await context.store.put_station(rec)
    await _disconnect(context, station_id, "blocked by the operator")
    context.bus.publish(OperatorAction(station_id=station_id, action="blocked"))
    return json_response(station_summary(rec, False))


@routes.post("/api/stations/{station_id}/unblock", ADMIN)
async def unblock_station(request: web.Request) -> web.Response:
    context = context_of(request)
    station_id = request.match_info["station_id"]
    rec = await known_station(request) or StationRecord(station_id)
    if rec.registration != "Blocked":
        raise ApiError(409, f"station {station_id!r} is not blocked (registration {rec.registration})")
    rec.registration = "Accepted" if rec.registered else "Unknown"
    await context.store.put_station(rec)
    context.bus.publish(OperatorAction(station_id=station_id, action="unblocked"))
    return json_response(station_summary(rec, station_id in context.connections))


@routes.delete("/api/stations/{station_id}", ADMIN)
async def unregister_station(request: web.Request) -> web.Response:
    """Forget a station (its history of transactions stays); a connected one is disconnected."""
    context = context_of(request)
    station_id = request.match_info["station_id"]
    await known_station(request)
    await _disconnect(context, station_id, "unregistered by the operator")
    await context.store.delete_station(station_id)
    context.bus.publish(OperatorAction(station_id=station_id, action="unregistered",
                                       when=datetime.now(timezone.utc).isoformat()))
    return web.Response(status=204)


async def boot_again(request: web.Request, station_id: str) -> bool:
    """A connected station that is not Accepted (Pending) is asked to boot again (B02, TriggerMessage),
    so an operator's approval or release takes effect at once. False when there was nothing to ask."""
    context = context_of(request)
    link = context.connections.get(station_id)
    if link is None or link.accepted:
        return False
    try:
        await context.commands.trigger_message(station_id, "BootNotification")
    except (OcppError, CallTimeout, StationOffline) as exc:
        log.warning("%s did not take the TriggerMessage BootNotification: %s", station_id, exc)
        return False
    return True


@routes.post("/api/stations/{station_id}/hold", ADMIN, body="hold_station")
async def hold_station(request: web.Request) -> web.Response:
    """Keep the station Pending from its next boot on, whatever its registration (B02), until released."""
    context = context_of(request)
    station_id = request.match_info["station_id"]
    rec = await known_station(request) or StationRecord(station_id)
    body = await read_body(request, "hold_station")
    rec.extra[HOLD_KEY] = body.get("reason", "")
    await context.store.put_station(rec)
    log.info("operator %s holds station %s: %s", principal_of(request), station_id, rec.extra[HOLD_KEY])
    context.bus.publish(OperatorAction(station_id=station_id, action="held"))
    return json_response(station_summary(rec, station_id in context.connections))


@routes.post("/api/stations/{station_id}/release", ADMIN)
async def release_station(request: web.Request) -> web.Response:
    """End a hold; a connected Pending station is asked to boot again (TriggerMessage BootNotification)."""
    context = context_of(request)
    station_id = request.match_info["station_id"]
    rec = await known_station(request) or StationRecord(station_id)
    rec.extra.pop(HOLD_KEY, None)
    await context.store.put_station(rec)
    context.bus.publish(OperatorAction(station_id=station_id, action="released"))
    out = station_summary(rec, station_id in context.connections)
    out["boot_requested"] = await boot_again(request, station_id)
    return json_response(out)

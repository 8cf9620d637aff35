"""Smart-charging notifications from stations (OCPP 2.0.1 block K)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from csms.handlers import router
from csms.handlers.common import now

if TYPE_CHECKING:
    from csms.connection import StationConnection


@router.on("NotifyEVChargingNeeds")
async def notify_ev_charging_needs(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    evse_id = payload["evseId"]
    await conn.daemon.store.record_ev_charging_needs(conn.station_id, evse_id, payload, now())
    conn.publish("ev.needs", evse_id=evse_id, needs=payload["chargingNeeds"],
                 max_schedule_tuples=payload.get("maxScheduleTuples"))
    # Accepted: a charging profile with a schedule will follow (the grid controller plans one).
    return {"status": "Accepted"}


@router.on("NotifyEVChargingSchedule")
async def notify_ev_charging_schedule(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    await conn.daemon.store.record_station_message(conn.station_id, "NotifyEVChargingSchedule", payload, now())
    conn.publish("ev.schedule", evse_id=payload["evseId"], schedule=payload["chargingSchedule"])
    return {"status": "Accepted"}


@router.on("NotifyChargingLimit")
async def notify_charging_limit(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    await conn.daemon.store.record_station_message(conn.station_id, "NotifyChargingLimit", payload, now())
    conn.publish("station.charging_limit", evse_id=payload.get("evseId"), limit=payload["chargingLimit"],
                 schedules=payload.get("chargingSchedule"))
    return {}


@router.on("ClearedChargingLimit")
async def cleared_charging_limit(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    await conn.daemon.store.record_station_message(conn.station_id, "ClearedChargingLimit", payload, now())
    conn.publish("station.charging_limit_cleared", evse_id=payload.get("evseId"),
                 source=payload["chargingLimitSource"])
    return {}


@router.on("ReportChargingProfiles")
async def report_charging_profiles(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    await conn.daemon.store.record_station_message(conn.station_id, "ReportChargingProfiles", payload, now())
    conn.publish("station.charging_profiles", request_id=payload["requestId"], evse_id=payload["evseId"],
                 profiles=payload["chargingProfile"], to_be_continued=bool(payload.get("tbc")))
    return {}

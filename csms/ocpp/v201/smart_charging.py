"""Smart-charging notifications from stations (OCPP 2.0.1 block K)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from csms.domain.events import (
    ChargingLimitCleared,
    ChargingLimitSet,
    ChargingProfilesReported,
    EvChargingNeeds,
    EvChargingSchedule,
)
from csms.interfaces import StationSession
from csms.ocpp.common import now
from csms.ocpp.package import Handler, HandlerDeps


def routes(deps: HandlerDeps) -> Mapping[str, Handler]:
    needs_store, messages = deps.smart_charging, deps.messages

    async def notify_ev_charging_needs(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        evse_id = payload["evseId"]
        await needs_store.record_ev_charging_needs(session.station_id, evse_id, payload, now())
        session.publish(EvChargingNeeds(station_id=session.station_id, evse_id=evse_id,
                                        needs=payload["chargingNeeds"],
                                        max_schedule_tuples=payload.get("maxScheduleTuples")))
        # Accepted: a charging profile with a schedule will follow (the grid controller plans one).
        return {"status": "Accepted"}

    async def notify_ev_charging_schedule(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        await messages.record_station_message(session.station_id, "NotifyEVChargingSchedule", payload, now())
        session.publish(EvChargingSchedule(station_id=session.station_id, evse_id=payload["evseId"],
                                           schedule=payload["chargingSchedule"]))
        return {"status": "Accepted"}

    async def notify_charging_limit(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        await messages.record_station_message(session.station_id, "NotifyChargingLimit", payload, now())
        session.publish(ChargingLimitSet(station_id=session.station_id, evse_id=payload.get("evseId"),
                                         limit=payload["chargingLimit"], schedules=payload.get("chargingSchedule")))
        return {}

    async def cleared_charging_limit(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        await messages.record_station_message(session.station_id, "ClearedChargingLimit", payload, now())
        session.publish(ChargingLimitCleared(station_id=session.station_id, evse_id=payload.get("evseId"),
                                             source=payload["chargingLimitSource"]))
        return {}

    async def report_charging_profiles(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        await messages.record_station_message(session.station_id, "ReportChargingProfiles", payload, now())
        session.publish(ChargingProfilesReported(station_id=session.station_id, request_id=payload["requestId"],
                                                 evse_id=payload["evseId"], profiles=payload["chargingProfile"],
                                                 to_be_continued=bool(payload.get("tbc"))))
        return {}

    return {"NotifyEVChargingNeeds": notify_ev_charging_needs,
            "NotifyEVChargingSchedule": notify_ev_charging_schedule,
            "NotifyChargingLimit": notify_charging_limit, "ClearedChargingLimit": cleared_charging_limit,
            "ReportChargingProfiles": report_charging_profiles}

"""Smart-charging notifications from stations (OCPP 2.0.1 block K)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
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
from csms.store.base import SmartChargingStore
from profiles.composite import InstalledProfile
from profiles.ev_schedule import ev_schedule_excess

log = logging.getLogger("csms.smart_charging")


async def _installed(store: SmartChargingStore, station_id: str) -> list[InstalledProfile]:
    """The profiles the station accepted from us, the latest of each id."""
    latest: dict[tuple[int, int], InstalledProfile] = {}
    for record in await store.list_charging_profiles(station_id):
        if record.get("status") != "Accepted":
            continue
        sent_at = record.get("sent_at")
        at = datetime.fromisoformat(sent_at) if isinstance(sent_at, str) else (sent_at or now())
        latest[(record["evse_id"], record["profile"]["id"])] = InstalledProfile(record["evse_id"], record["profile"], at)
    return list(latest.values())


def _tx_profile(installed: list[InstalledProfile], evse_id: int, transaction_id: str | None) -> dict[str, Any] | None:
    """The TxProfile to send again to renegotiate (the latest for this EVSE and transaction)."""
    for item in reversed(installed):
        profile = item.profile
        if (item.evse_id == evse_id and profile.get("chargingProfilePurpose") == "TxProfile"
                and (transaction_id is None or profile.get("transactionId") == transaction_id)):
            return profile
    return None


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
        """K15.FR.11/12, K16.FR.06/07: the EV's schedule must stay within the profiles we sent; when it
        does not, Rejected, and a renegotiation follows (K15.FR.13 / K16.FR.08: the TxProfile again)."""
        await messages.record_station_message(session.station_id, "NotifyEVChargingSchedule", payload, now())
        session.publish(EvChargingSchedule(station_id=session.station_id, evse_id=payload["evseId"],
                                           schedule=payload["chargingSchedule"]))
        evse_id = payload["evseId"]
        installed = await _installed(needs_store, session.station_id)
        active = await deps.transactions.list_transactions(station_id=session.station_id, active=True)
        transaction = next((t for t in active if t.evse_id == evse_id), None)
        try:
            excess = ev_schedule_excess(installed, evse_id=evse_id, time_base=payload["timeBase"],
                                        ev_schedule=payload["chargingSchedule"],
                                        transaction_id=transaction.transaction_id if transaction else None,
                                        transaction_start=transaction.started_at if transaction else None)
        except (ValueError, KeyError) as exc:  # a profile we cannot evaluate: do not refuse the EV for it
            log.warning("%s: cannot check the EV schedule of EVSE %s: %s", session.station_id, evse_id, exc)
            excess = None
        if excess is None:
            return {"status": "Accepted"}
        renegotiate = _tx_profile(installed, evse_id, transaction.transaction_id if transaction else None)
        if renegotiate is not None:
            async def again() -> None:
                await session.call("SetChargingProfile", {"evseId": evse_id, "chargingProfile": renegotiate})
            session.after(again)
        return {"status": "Rejected", "statusInfo": {"reasonCode": "ExceedsProfile",
                                                     "additionalInfo": excess.describe()[:512]}}

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

"""Station-initiated messages OCPP 2.1 adds to 2.0.1: each gets a schema-valid answer and is kept.

Notifications (DER alarms and controls, priority charging, settlements, battery swaps, closed
event streams) are kept in the message log and published like 2.0.1's status notifications.
Requests for a service this central system does not offer get an honest refusal with a reason:
periodic event streams (their data comes in SEND frames, which OCPP-J as the ``ocpp`` package
speaks it cannot carry), dynamic schedule updates (our TxProfiles are Absolute, never Dynamic),
VAT number validation (no registry behind it), certificate chain status (no CRL/OCSP client).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from csms.interfaces import StationSession
from csms.ocpp.common import now, ocpp_time
from csms.ocpp.package import Handler, HandlerDeps
from csms.ocpp.v201.notifications import _kept as kept

Payload = dict[str, Any]

KEPT_21 = ("NotifyDERAlarm", "NotifyDERStartStop", "ReportDERControl", "NotifyPriorityCharging", "BatterySwap",
           "ClosePeriodicEventStream")


def _refusal(reason_code: str, why: str) -> Payload:
    return {"reasonCode": reason_code[:20], "additionalInfo": why[:1024]}


def routes(deps: HandlerDeps) -> Mapping[str, Handler]:
    messages, reports = deps.messages, deps.reports

    async def notify_settlement(session: StationSession, payload: Payload) -> Payload:
        # A payment terminal's settlement: kept (billing reads the log); no receipt of ours to add.
        await messages.record_station_message(session.station_id, "NotifySettlement", payload, now())
        return {}

    async def open_periodic_event_stream(session: StationSession, payload: Payload) -> Payload:
        await messages.record_station_message(session.station_id, "OpenPeriodicEventStream", payload, now())
        return {"status": "Rejected", "statusInfo": _refusal(
            "NotSupported", "periodic event streams use SEND frames, which this central system does not read; "
                            "report through NotifyEvent or MeterValues instead")}

    async def pull_dynamic_schedule_update(session: StationSession, payload: Payload) -> Payload:
        await messages.record_station_message(session.station_id, "PullDynamicScheduleUpdate", payload, now())
        return {"status": "Rejected", "statusInfo": _refusal(
            "UnknownProfile", f"charging profile {payload['chargingProfileId']} is not a Dynamic profile of ours "
                              "(our TxProfiles are Absolute)")}

    async def vat_number_validation(session: StationSession, payload: Payload) -> Payload:
        await messages.record_station_message(session.station_id, "VatNumberValidation", payload, now())
        response: Payload = {"vatNumber": payload["vatNumber"], "status": "Rejected",
                             "statusInfo": _refusal("NotSupported", "no VAT number registry is configured")}
        if "evseId" in payload:
            response["evseId"] = payload["evseId"]
        return response

    async def get_certificate_chain_status(session: StationSession, payload: Payload) -> Payload:
        # Without a CRL/OCSP client nothing can be vouched for: Failed, to be asked again (nextUpdate).
        return {"certificateStatus": [
            {"certificateHashData": item["certificateHashData"], "source": item["source"], "status": "Failed",
             "nextUpdate": ocpp_time()} for item in payload["certificateStatusRequests"]]}

    return {**{action: kept(messages, reports, action) for action in KEPT_21},
            "NotifySettlement": notify_settlement, "OpenPeriodicEventStream": open_periodic_event_stream,
            "PullDynamicScheduleUpdate": pull_dynamic_schedule_update, "VatNumberValidation": vat_number_validation,
            "GetCertificateChainStatus": get_certificate_chain_status}

"""TransactionEvent and MeterValues (OCPP 2.0.1 blocks E and J).

A retransmitted event (same transaction and seqNo) is answered like the first time but stored and
published only once. Offline-queued events are stored as they come; a transaction we first see
as ``Updated`` (its ``Started`` was lost, or the daemon was down) is still recorded. The event is
mapped onto the domain's :class:`csms.domain.transactions.TxEvent` (checked once, here, before
anything is stored); the store folds it into the transaction with the shared merge rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from csms.domain import vehicles
from csms.domain.events import MeterValuesReceived, TransactionChanged
from csms.domain.meter import BadSample, flatten, latest_reading
from csms.domain.transactions import TxEvent
from csms.interfaces import StationSession
from csms.ocpp.common import now
from csms.ocpp.package import Handler, HandlerDeps
from csms.ocpp.v201.authorization import id_token_info
from csms.protocol.errors import OcppError


def tx_event(payload: dict[str, Any]) -> TxEvent:
    """A 2.0.1 TransactionEventRequest in the domain's terms; ValueError for what cannot be stored."""
    info = payload.get("transactionInfo") or {}
    evse = payload.get("evse") or {}
    samples = flatten(payload.get("meterValue", []), evse.get("id"), info.get("transactionId"))
    return TxEvent.checked(
        transaction_id=info.get("transactionId"), seq_no=payload.get("seqNo"), event_type=payload.get("eventType"),
        timestamp=payload.get("timestamp"), payload=payload, samples=samples,
        trigger_reason=payload.get("triggerReason"), evse_id=evse.get("id"), connector_id=evse.get("connectorId"),
        id_token=(payload.get("idToken") or {}).get("idToken"), charging_state=info.get("chargingState"),
        stopped_reason=info.get("stoppedReason"), offline=bool(payload.get("offline")))


def _refused(exc: ValueError) -> OcppError:
    """A value no store may keep: the station gets a precise CALLERROR, nothing is stored."""
    if isinstance(exc, BadSample):
        return OcppError("PropertyConstraintViolation", f"meterValue: {exc}", {"field": "meterValue"})
    return OcppError("PropertyConstraintViolation", str(exc))


def routes(deps: HandlerDeps) -> Mapping[str, Handler]:
    store, authorizer, reports, billing = deps.transactions, deps.authorizer, deps.reports, deps.billing

    async def transaction_event(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            event = tx_event(payload)
        except ValueError as exc:
            raise _refused(exc) from None
        stored = await store.record_transaction_event(session.station_id, event, now())
        response: dict[str, Any] = {}
        if "idToken" in payload:
            response["idTokenInfo"] = await id_token_info(authorizer, payload["idToken"])
            remote_start = (payload.get("transactionInfo") or {}).get("remoteStartId")
            if (response["idTokenInfo"]["status"] == "Unknown" and remote_start is not None and reports is not None
                    and await reports.remote_start_granted(session.station_id, remote_start,
                                                           payload["idToken"].get("idToken", ""))):
                response["idTokenInfo"] = {"status": "Accepted"}
        if billing is not None and (stored or payload["eventType"] == "Ended"):
            total = await billing.transaction_event(session, payload, None)
            if total is not None:  # I03: the final total (0.00 for a free session)
                response["totalCost"] = total
        if stored and reports is not None and "reservationId" in payload:
            await reports.reservation_changed(payload["reservationId"], "Used", event.transaction_id)
        if stored:
            session.publish(TransactionChanged(
                station_id=session.station_id, event_type=event.event_type, transaction_id=event.transaction_id,
                evse_id=event.evse_id, seq_no=event.seq_no, trigger_reason=event.trigger_reason,
                charging_state=event.charging_state, stopped_reason=event.stopped_reason, offline=event.offline,
                timestamp=event.timestamp, reading=latest_reading(event.samples), id_token=event.id_token,
                vehicle_ids=vehicles.from_transaction_event(payload)))
        return response

    async def meter_values(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        evse_id = payload["evseId"]
        try:
            samples = flatten(payload["meterValue"], evse_id, None)
        except ValueError as exc:
            raise _refused(exc) from None
        await store.record_meter_values(session.station_id, samples, now())
        session.publish(MeterValuesReceived(station_id=session.station_id, evse_id=evse_id,
                                            reading=latest_reading(samples)))
        return {}

    return {"TransactionEvent": transaction_event, "MeterValues": meter_values}

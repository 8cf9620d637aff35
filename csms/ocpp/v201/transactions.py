"""TransactionEvent and MeterValues (OCPP 2.0.1 blocks E and J).

A retransmitted event (same transaction and seqNo) is answered like the first time but stored and
published only once. Offline-queued events are stored as they come; a transaction we first see
as ``Updated`` (its ``Started`` was lost, or the daemon was down) is still recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from csms.domain.events import MeterValuesReceived, TransactionChanged
from csms.domain.meter import BadSample, Sample, flatten, latest_reading
from csms.interfaces import StationSession
from csms.ocpp.common import now
from csms.ocpp.package import Handler, HandlerDeps
from csms.ocpp.v201.authorization import id_token_info
from csms.protocol.errors import OcppError


def _samples(meter_values: list[dict[str, Any]], evse_id: int | None, transaction_id: str | None) -> list[Sample]:
    """Flatten and check the sampled values before anything is stored (a bad one refuses the message)."""
    try:
        return flatten(meter_values, evse_id, transaction_id)
    except BadSample as exc:
        raise OcppError("PropertyConstraintViolation", f"meterValue: {exc}", {"field": "meterValue"}) from None


def routes(deps: HandlerDeps) -> Mapping[str, Handler]:
    store, authorizer = deps.transactions, deps.authorizer

    async def transaction_event(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        info = payload["transactionInfo"]
        evse = payload.get("evse") or {}
        samples = _samples(payload.get("meterValue", []), evse.get("id"), info["transactionId"])
        stored = await store.record_transaction_event(session.station_id, payload, now())
        response: dict[str, Any] = {}
        if "idToken" in payload:
            response["idTokenInfo"] = await id_token_info(authorizer, payload["idToken"])
        if stored:
            session.publish(TransactionChanged(
                station_id=session.station_id, event_type=payload["eventType"], transaction_id=info["transactionId"],
                evse_id=evse.get("id"), seq_no=payload["seqNo"], trigger_reason=payload["triggerReason"],
                charging_state=info.get("chargingState"), stopped_reason=info.get("stoppedReason"),
                offline=bool(payload.get("offline")), timestamp=payload["timestamp"],
                reading=latest_reading(samples), id_token=(payload.get("idToken") or {}).get("idToken")))
        return response

    async def meter_values(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        evse_id = payload["evseId"]
        samples = _samples(payload["meterValue"], evse_id, None)
        await store.record_meter_values(session.station_id, evse_id, payload["meterValue"], now())
        session.publish(MeterValuesReceived(station_id=session.station_id, evse_id=evse_id,
                                            reading=latest_reading(samples)))
        return {}

    return {"TransactionEvent": transaction_event, "MeterValues": meter_values}

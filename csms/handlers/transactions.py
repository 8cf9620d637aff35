"""TransactionEvent and MeterValues (OCPP 2.0.1 blocks E and J).

A retransmitted event (same transaction and seqNo) is answered like the first time but stored and
published only once. Offline-queued events are stored as they come; a transaction we first see
as ``Updated`` (its ``Started`` was lost, or the daemon was down) is still recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from csms.handlers import router
from csms.handlers.authorization import id_token_info
from csms.handlers.common import now
from csms.meter import BadSample, Sample, flatten, latest_reading
from csms.protocol.errors import OcppError

if TYPE_CHECKING:
    from csms.connection import StationConnection


def _samples(meter_values: list[dict[str, Any]], evse_id: int | None, transaction_id: str | None) -> list[Sample]:
    """Flatten and check the sampled values before anything is stored (a bad one refuses the message)."""
    try:
        return flatten(meter_values, evse_id, transaction_id)
    except BadSample as exc:
        raise OcppError("PropertyConstraintViolation", f"meterValue: {exc}", {"field": "meterValue"}) from None


@router.on("TransactionEvent")
async def transaction_event(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    info = payload["transactionInfo"]
    evse = payload.get("evse") or {}
    samples = _samples(payload.get("meterValue", []), evse.get("id"), info["transactionId"])
    stored = await conn.daemon.store.record_transaction_event(conn.station_id, payload, now())
    response: dict[str, Any] = {}
    if "idToken" in payload:
        response["idTokenInfo"] = await id_token_info(conn, payload["idToken"])
    if stored:
        conn.publish(f"transaction.{payload['eventType'].lower()}", transaction_id=info["transactionId"],
                     evse_id=evse.get("id"), seq_no=payload["seqNo"], trigger_reason=payload["triggerReason"],
                     charging_state=info.get("chargingState"), stopped_reason=info.get("stoppedReason"),
                     offline=bool(payload.get("offline")), timestamp=payload["timestamp"],
                     reading=latest_reading(samples), id_token=(payload.get("idToken") or {}).get("idToken"))
    return response


@router.on("MeterValues")
async def meter_values(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    evse_id = payload["evseId"]
    samples = _samples(payload["meterValue"], evse_id, None)
    await conn.daemon.store.record_meter_values(conn.station_id, evse_id, payload["meterValue"], now())
    conn.publish("meter.values", evse_id=evse_id, reading=latest_reading(samples))
    return {}

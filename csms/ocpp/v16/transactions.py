"""StartTransaction, StopTransaction and MeterValues (OCPP 1.6 Core) on the domain's transactions.

1.6 lets the central system choose the transaction id: an integer from a durable counter of the
store (``DocumentStore.next_number``), so ids stay unique across restarts and nodes, and it is
stored before the station hears it. The domain keeps it as its decimal string.

Each 1.6 message becomes a :class:`csms.domain.transactions.TxEvent`, the record a 2.0.1
TransactionEvent becomes, kept in the 2.0.1 form (``transactionInfo``, ``evse``, ``meterValue``
with ``unitOfMeasure``) plus the message as it arrived under ``ocpp16``, so every reader of
transactions (API, billing, the grid's rebuild) reads one shape. 1.6 has no ``seqNo``: the
sequence number is derived from the message's own timestamp (milliseconds since 2020, then 9 bits
of a checksum of the message, then the kind: meter values 0, charging state 1, end 3; the start is
0; :func:`seq_for`), so events order as the station meant them. The number alone cannot tell a
retransmission from another message: two different messages of one transaction with one timestamp
share a checksum once in 512. So when the number is taken, the stored event's message is compared
(:func:`place`): the same message is a retransmission and stored once; a different one takes the
next free number of its kind (``+4``, :func:`seq_candidates`), so nothing is dropped. A
retransmission walks the same numbers and meets its first copy before any free one (events are
never deleted). A retransmitted StartTransaction (same connector, id tag and timestamp as a
running transaction) gets the id it was given the first time.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from csms.domain.datetimes import normalise, parse
from csms.domain.events import MeterValuesReceived, TransactionChanged
from csms.domain.meter import BadSample, Sample, flatten, latest_reading
from csms.domain.transactions import TxEvent
from csms.interfaces import StationSession
from csms.ocpp.common import now, ocpp_time
from csms.ocpp.package import Handler, HandlerDeps
from csms.ocpp.v16.authorization import id_tag_info
from csms.protocol.errors import OcppError
from csms.store.base import TransactionStore

#: The durable counter the integer transaction ids come from (one for the whole system).
TRANSACTION_COUNTER = "ocpp1.6-transaction"
#: 1.6 transactionId is a JSON integer most stations keep in 32 bits.
MAX_TRANSACTION_ID = 2**31 - 1

_KIND = {"meter": 0, "state": 1, "end": 3}
_KIND_STEP = 4  # the kind is the low 2 bits: +4 is the next number of the same kind
_EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
#: Every number stays below 2^53: exact where a store keeps it as a double (Redis scores).
SEQ_LIMIT = 1 << 53
#: Re-reads of the stored events when another writer took the number first (another node).
_PLACE_ATTEMPTS = 8


def seq_for(timestamp: str, kind: str, message: dict[str, Any]) -> int:
    """The sequence number of a 1.6 message: its instant in ms since 2020 (42 bits: until 2159; earlier
    instants count as 2020), then 9 bits of a checksum of the message (two different messages with one
    timestamp are both kept, a retransmission is the same), then its kind (2 bits). Below 2^53, so it
    stays exact wherever a store keeps it as a double (Redis scores)."""
    ms = math.floor(parse(timestamp).timestamp() * 1000) - _EPOCH_MS
    ms = min(max(ms, 0), (1 << 42) - 1)
    digest = zlib.crc32(orjson.dumps(message, option=orjson.OPT_SORT_KEYS)) & 0x1FF
    return max(1, (ms << 11) | (digest << 2) | _KIND[kind])


def seq_candidates(first: int) -> Iterator[int]:
    """The numbers a message whose own number is ``first`` may take, in order: ``first``, then
    upward in steps of 4 (the same kind, the same or next millisecond), and only where that would
    reach 2^53 (the year 2159) downward; all distinct, all in ``1 .. 2^53 - 1``."""
    n = first
    while n < SEQ_LIMIT:
        yield n
        n += _KIND_STEP
    n = first - _KIND_STEP
    while n > 0:
        yield n
        n -= _KIND_STEP


_FREE = object()


def place(first: int, message: object, stored: Mapping[int, object]) -> int | None:
    """The number a message takes given the messages stored by number, or None if it is stored
    already (a retransmission). ``first`` is its own number (:func:`seq_for`); the first of
    :func:`seq_candidates` that is free or holds this very message decides."""
    for n in seq_candidates(first):
        held = stored.get(n, _FREE)
        if held is _FREE:
            return n
        if held == message:
            return None
    raise ValueError(f"no free sequence number for a message numbered {first}")


def meter_values_201(meter_values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """1.6 MeterValue objects in the 2.0.1 shape the domain flattens (numbers, ``unitOfMeasure``).

    A ``SignedData`` value is not a number and is left out (it stays in the stored message);
    any other value that is not a finite decimal number is refused (BadSample).
    """
    out = []
    for n, mv in enumerate(meter_values):
        sampled = []
        for k, sv in enumerate(mv.get("sampledValue", ())):
            if sv.get("format") == "SignedData":
                continue
            text = sv["value"]
            try:
                value = float(text)
            except ValueError:
                raise BadSample(f"meterValue[{n}].sampledValue[{k}].value {text[:40]!r} is not a number") from None
            if not math.isfinite(value):
                raise BadSample(f"meterValue[{n}].sampledValue[{k}].value {text[:40]!r} is not a finite number")
            item: dict[str, Any] = {"value": value}
            for key in ("context", "measurand", "phase", "location"):
                if key in sv:
                    item[key] = sv[key]
            if "unit" in sv:
                item["unitOfMeasure"] = {"unit": sv["unit"]}
            sampled.append(item)
        if sampled:
            out.append({"timestamp": mv["timestamp"], "sampledValue": sampled})
    return out


def _register(timestamp: str, wh: int, context: str) -> dict[str, Any]:
    return {"timestamp": timestamp, "sampledValue": [{"value": float(wh), "context": context,
                                                      "measurand": "Energy.Active.Import.Register",
                                                      "unitOfMeasure": {"unit": "Wh"}}]}


def _event(action: str, original: dict[str, Any], *, transaction_id: str, seq_no: int, event_type: str,
           timestamp: str, trigger: str, evse_id: int | None, meter_value: list[dict[str, Any]],
           id_tag: str | None = None, charging_state: str | None = None,
           stopped_reason: str | None = None) -> TxEvent:
    """The domain event (ValueError for what cannot be stored), its payload in the 2.0.1 form."""
    info: dict[str, Any] = {"transactionId": transaction_id}
    if charging_state is not None:
        info["chargingState"] = charging_state
    if stopped_reason is not None:
        info["stoppedReason"] = stopped_reason
    payload: dict[str, Any] = {"eventType": event_type, "timestamp": timestamp, "triggerReason": trigger,
                               "seqNo": seq_no, "transactionInfo": info, "ocpp16": {"action": action,
                                                                                   "payload": original}}
    if evse_id is not None:
        payload["evse"] = {"id": evse_id, "connectorId": 1}
    if id_tag is not None:
        payload["idToken"] = {"idToken": id_tag, "type": "ISO14443"}
    if meter_value:
        payload["meterValue"] = meter_value
    samples = flatten(meter_value, evse_id, transaction_id)
    return TxEvent.checked(transaction_id=transaction_id, seq_no=seq_no, event_type=event_type, timestamp=timestamp,
                           payload=payload, samples=samples, trigger_reason=trigger, evse_id=evse_id,
                           connector_id=1 if evse_id is not None else None, id_token=id_tag,
                           charging_state=charging_state, stopped_reason=stopped_reason)


def _refused(exc: ValueError) -> OcppError:
    if isinstance(exc, BadSample):
        return OcppError("PropertyConstraintViolation", f"meterValue: {exc}", {"field": "meterValue"})
    return OcppError("PropertyConstraintViolation", str(exc))


def _changed(session: StationSession, event: TxEvent) -> TransactionChanged:
    return TransactionChanged(
        station_id=session.station_id, event_type=event.event_type, transaction_id=event.transaction_id,
        evse_id=event.evse_id, seq_no=event.seq_no, trigger_reason=event.trigger_reason,
        charging_state=event.charging_state, stopped_reason=event.stopped_reason, offline=False,
        timestamp=event.timestamp, reading=latest_reading(event.samples), id_token=event.id_token)


def _content(event: TxEvent) -> object:
    """What tells two 1.6 messages apart: the action and the message as it arrived."""
    return event.payload.get("ocpp16")


async def _store_event(store: TransactionStore, session: StationSession, event: TxEvent) -> bool:
    """Store a 1.6 event under its own number or, if another message holds that, the next free one
    (:func:`place`); False if this very message is stored already. Published when stored."""
    first = event.seq_no
    for _ in range(_PLACE_ATTEMPTS):
        if await store.record_transaction_event(session.station_id, event, now()):
            session.publish(_changed(session, event))
            return True
        events = await store.transaction_events(session.station_id, event.transaction_id)
        held: dict[int, object] = {e["seqNo"]: e.get("ocpp16") for e in events if isinstance(e.get("seqNo"), int)}
        n = place(first, _content(event), held)
        if n is None:
            return False
        event = dataclasses.replace(event, seq_no=n, payload={**event.payload, "seqNo": n})
    raise OcppError("InternalError", f"transaction {event.transaction_id}: other writers kept taking the sequence"
                                     f" number of this message ({_PLACE_ATTEMPTS} attempts); send it again")


async def charging_state_changed(store: TransactionStore, session: StationSession, evse_id: int, state: str,
                                 timestamp: str | None) -> None:
    """A StatusNotification's charging state for the transaction running on ``evse_id``, if any."""
    active = await store.list_transactions(station_id=session.station_id, active=True)
    running = next((t for t in active if t.evse_id == evse_id), None)
    if running is None:
        return
    stamp = timestamp or ocpp_time()
    status = {"connectorId": evse_id, "status": state}
    try:
        event = _event("StatusNotification", status,
                       transaction_id=running.transaction_id, seq_no=seq_for(stamp, "state", status), event_type="Updated",
                       timestamp=stamp,
                       trigger="ChargingStateChanged", evse_id=evse_id, meter_value=[], charging_state=state)
    except ValueError:
        return  # the status itself is stored; a timestamp no store keeps only loses the state
    await _store_event(store, session, event)


def routes(deps: HandlerDeps) -> Mapping[str, Handler]:
    store, authorizer, documents, reports = deps.transactions, deps.authorizer, deps.documents, deps.reports

    async def start_transaction(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        connector, id_tag = payload["connectorId"], payload["idTag"]
        if connector < 1:
            raise OcppError("PropertyConstraintViolation", "connectorId: a transaction runs on a connector > 0",
                            {"field": "connectorId"})
        info = await id_tag_info(authorizer, id_tag)
        if (info["status"] == "Invalid" and reports is not None
                and await reports.remote_start_tag_granted(session.station_id, id_tag, connector)):
            info = {"status": "Accepted"}  # a tag we handed out ourselves with RemoteStartTransaction
        timestamp = payload["timestamp"]
        for running in await store.list_transactions(station_id=session.station_id, active=True):
            if (running.evse_id == connector and running.id_token == id_tag and running.started_at is not None
                    and running.started_at == parse(timestamp) and running.transaction_id.isdigit()):
                return {"idTagInfo": info, "transactionId": int(running.transaction_id)}  # a retransmission
        if documents is None:
            raise OcppError("InternalError", "no counter for transaction ids is configured")
        number = await documents.next_number(TRANSACTION_COUNTER)
        if number > MAX_TRANSACTION_ID:
            raise OcppError("InternalError", "the transaction id counter is exhausted")
        try:
            event = _event("StartTransaction", payload, transaction_id=str(number), seq_no=0, event_type="Started",
                           timestamp=timestamp, trigger="Authorized", evse_id=connector,
                           meter_value=[_register(timestamp, payload["meterStart"], "Transaction.Begin")],
                           id_tag=id_tag)
        except ValueError as exc:
            raise _refused(exc) from None
        await store.record_transaction_event(session.station_id, event, now())
        if reports is not None and "reservationId" in payload:
            await reports.reservation_changed(payload["reservationId"], "Used", event.transaction_id)
        session.publish(_changed(session, event))
        return {"idTagInfo": info, "transactionId": number}

    async def stop_transaction(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        transaction_id, timestamp = str(payload["transactionId"]), payload["timestamp"]
        record = await store.get_transaction(session.station_id, transaction_id)
        evse_id = record.evse_id if record is not None else None
        try:
            meter = meter_values_201(payload.get("transactionData") or [])
            meter.append(_register(normalise(timestamp), payload["meterStop"], "Transaction.End"))
            event = _event("StopTransaction", payload, transaction_id=transaction_id,
                           seq_no=seq_for(timestamp, "end", payload), event_type="Ended", timestamp=timestamp,
                           trigger="StopAuthorized" if payload.get("reason") in (None, "Local", "Remote")
                           else "AbnormalCondition", evse_id=evse_id, meter_value=meter,
                           id_tag=payload.get("idTag"), charging_state="Idle",
                           stopped_reason=payload.get("reason", "Local"))
        except ValueError as exc:
            raise _refused(exc) from None
        await _store_event(store, session, event)
        if "idTag" in payload:
            return {"idTagInfo": await id_tag_info(authorizer, payload["idTag"])}
        return {}

    async def meter_values(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        connector = payload["connectorId"]
        evse_id = connector if connector > 0 else 0
        try:
            meter = meter_values_201(payload["meterValue"])
        except ValueError as exc:
            raise _refused(exc) from None
        if not meter:
            return {}
        if "transactionId" in payload and connector > 0:
            last = max(meter, key=lambda mv: parse(mv["timestamp"]))["timestamp"]
            try:
                event = _event("MeterValues", payload, transaction_id=str(payload["transactionId"]),
                               seq_no=seq_for(last, "meter", payload), event_type="Updated", timestamp=last,
                               trigger="MeterValuePeriodic", evse_id=evse_id, meter_value=meter)
            except ValueError as exc:
                raise _refused(exc) from None
            await _store_event(store, session, event)
            return {}
        try:
            samples: list[Sample] = flatten(meter, evse_id, None)
        except ValueError as exc:
            raise _refused(exc) from None
        await store.record_meter_values(session.station_id, samples, now())
        session.publish(MeterValuesReceived(station_id=session.station_id, evse_id=evse_id,
                                            reading=latest_reading(samples)))
        return {}

    return {"StartTransaction": start_transaction, "StopTransaction": stop_transaction, "MeterValues": meter_values}

"""Schema-valid OCPP 2.0.1 payloads for the load generator, pre-rendered as JSON text.

Building a payload is string formatting on a cached timestamp (re-rendered at most once a
second): the load generator's CPU goes into sockets, not into json.dumps of nested dicts.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

_stamp = ("", -1)


def timestamp() -> str:
    global _stamp
    second = int(time.time())
    if _stamp[1] != second:
        _stamp = (datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"), second)
    return _stamp[0]


def boot(reason: str = "PowerUp") -> str:
    return ('{"reason":"%s","chargingStation":{"vendorName":"BenchVendor","model":"Lean-AC22",'
            '"serialNumber":"B-1","firmwareVersion":"1.0"}}' % reason)


def heartbeat() -> str:
    return "{}"


def status(state: str = "Occupied") -> str:
    return '{"timestamp":"%s","connectorStatus":"%s","evseId":1,"connectorId":1}' % (timestamp(), state)


def _meter(wh: float, w: float) -> str:
    return ('[{"timestamp":"%s","sampledValue":['
            '{"value":%.1f,"measurand":"Energy.Active.Import.Register","unitOfMeasure":{"unit":"Wh"}},'
            '{"value":%.1f,"measurand":"Power.Active.Import","unitOfMeasure":{"unit":"W"}},'
            '{"value":%.1f,"measurand":"Current.Import","phase":"L1","unitOfMeasure":{"unit":"A"}}]}]'
            % (timestamp(), wh, w, w / 690.0))


def meter_values(wh: float, w: float) -> str:
    return '{"evseId":1,"meterValue":%s}' % _meter(wh, w)


def transaction_event(event: str, tx_id: str, seq_no: int, trigger: str, wh: float, w: float,
                      state: str = "Charging", offline: bool = False) -> str:
    extra = ',"offline":true' if offline else ""
    evse = ',"evse":{"id":1,"connectorId":1}' if event == "Started" else ""
    token = ',"idToken":{"idToken":"BENCH%s","type":"ISO14443"}' % tx_id[-6:] if event == "Started" else ""
    return ('{"eventType":"%s","timestamp":"%s","triggerReason":"%s","seqNo":%d,'
            '"transactionInfo":{"transactionId":"%s","chargingState":"%s"}%s%s%s,"meterValue":%s}'
            % (event, timestamp(), trigger, seq_no, tx_id, state, evse, token, extra, _meter(wh, w)))


# The realistic mix of a charging fleet, in 20 steps: meter data dominates.
MIX: tuple[str, ...] = ("MeterValues", "TransactionEvent", "MeterValues", "StatusNotification", "MeterValues",
                        "TransactionEvent", "Heartbeat", "MeterValues", "TransactionEvent", "MeterValues",
                        "StatusNotification", "MeterValues", "TransactionEvent", "Heartbeat", "MeterValues",
                        "TransactionEvent", "MeterValues", "StatusNotification", "TransactionEvent", "Heartbeat")

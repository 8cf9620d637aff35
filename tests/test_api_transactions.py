"""Transactions and meter values through the operator API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.api_fixture import api_daemon
from tests.ocpp_client import RawStation


def _mv(ts: str, wh: float, w: float | None = None, phases: dict[str, float] | None = None) -> dict[str, Any]:
    values: list[dict[str, Any]] = [{"value": wh, "measurand": "Energy.Active.Import.Register"}]
    if w is not None:
        values.append({"value": w, "measurand": "Power.Active.Import"})
    for phase, v in (phases or {}).items():
        values.append({"value": v, "measurand": "Power.Active.Import", "phase": phase})
    return {"timestamp": ts, "sampledValue": values}


async def _session(st: RawStation, tx: str, evse: int, day: str, *, end: bool) -> None:
    base = {"transactionInfo": {"transactionId": tx, "chargingState": "Charging"}, "evse": {"id": evse, "connectorId": 1}}
    await st.result("TransactionEvent", {**base, "eventType": "Started", "timestamp": f"{day}T10:00:00Z",
                                         "triggerReason": "Authorized", "seqNo": 0,
                                         "idToken": {"idToken": "CARD1", "type": "ISO14443"},
                                         "meterValue": [_mv(f"{day}T10:00:00Z", 1000.0, 0.0)]})
    await st.result("TransactionEvent", {**base, "eventType": "Updated", "timestamp": f"{day}T10:15:00Z",
                                         "triggerReason": "MeterValuePeriodic", "seqNo": 1,
                                         "meterValue": [_mv(f"{day}T10:15:00Z", 3750.0, 11000.0)]})
    # A MeterValues message carries no transaction id; per-phase power without a total.
    await st.result("MeterValues", {"evseId": evse, "meterValue": [
        _mv(f"{day}T10:20:00Z", 4500.0, phases={"L1": 3000.0, "L2": 3000.0, "L3": 3100.0})]})
    if end:
        await st.result("TransactionEvent", {**base, "eventType": "Ended", "timestamp": f"{day}T10:30:00Z",
                                             "triggerReason": "EVCommunicationLost", "seqNo": 2,
                                             "transactionInfo": {"transactionId": tx, "stoppedReason": "EVDisconnected"},
                                             "meterValue": [_mv(f"{day}T10:30:00Z", 5000.0, 0.0)]})


async def test_list_filters_by_station_state_and_time(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        a = await api.station("CS-A")
        b = await api.station("CS-B")
        await _session(a, "tx-old", 1, "2025-01-01", end=True)
        await _session(a, "tx-live", 2, "2025-03-01", end=False)
        await _session(b, "tx-b", 1, "2025-03-01", end=True)

        async def ids(query: str) -> list[str]:
            status, body = await api.get("/api/transactions" + query, token="read")
            assert status == 200, body
            return sorted(t["transaction_id"] for t in body["transactions"])

        assert await ids("") == ["tx-b", "tx-live", "tx-old"]
        assert await ids("?station_id=CS-A") == ["tx-live", "tx-old"]
        assert await ids("?active=true") == ["tx-live"]
        assert await ids("?active=false&station_id=CS-B") == ["tx-b"]
        assert await ids("?until=2025-02-01T00:00:00Z") == ["tx-old"]
        assert await ids("?since=2025-02-01T00:00:00Z") == ["tx-b", "tx-live"]
        assert len(await ids("?limit=1")) == 1
        _, body = await api.get("/api/transactions?station_id=CS-A&active=false")
        [old] = body["transactions"]
        assert old["energy_wh"] == 5000.0 and old["stopped_reason"] == "EVDisconnected"
        assert old["id_token"] == "CARD1" and old["evse_id"] == 1 and old["active"] is False


async def test_detail_has_events_energy_and_power_series(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        a = await api.station("CS-A")
        await _session(a, "tx-1", 1, "2025-01-01", end=True)
        status, body = await api.get("/api/transactions/CS-A/tx-1", token="read")
        assert status == 200
        assert [e["eventType"] for e in body["events"]] == ["Started", "Updated", "Ended"]
        assert [p["energy_wh"] for p in body["energy_series"]] == [1000.0, 3750.0, 4500.0, 5000.0]
        assert [p["power_w"] for p in body["power_series"]] == [0.0, 11000.0, 9100.0, 0.0]
        assert body["power_series"][2]["timestamp"] == "2025-01-01T10:20:00Z"


async def test_bad_queries_and_unknown_transactions(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        for query, field in (("?active=maybe", "active"), ("?since=yesterday", "since"), ("?limit=0", "limit"),
                             ("?limit=ten", "limit"), ("?until=2025-01-01T00:00:00", "until"),
                             ("?since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z", "since")):
            status, body = await api.get("/api/transactions" + query)
            assert status == 400 and body["field"] == field, query
        status, body = await api.get("/api/transactions/CS-A/nope")
        assert (status, body) == (404, {"error": "station 'CS-A' has no transaction 'nope'"})

"""Transaction summaries: from the ``Started`` event (or the lowest seqNo), instants compared as
instants, and a second ``Ended`` never rewrites the first; on both store backends.

Exact frames from a raw OCPP-J client, through a daemon run as a process; read back through the
operator API.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.grid_outside import Api, Site, daemon
from tests.ocpp_client import RawStation


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def event(kind: str, seq: int, ts: str, tx: str, *, evse: bool = False, offline: bool = False,
          energy_wh: float | None = None, stopped_reason: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"transactionId": tx, "chargingState": "Charging" if kind != "Ended" else "Idle"}
    if stopped_reason:
        info["stoppedReason"] = stopped_reason
    payload: dict[str, Any] = {"eventType": kind, "timestamp": ts, "seqNo": seq, "transactionInfo": info,
                               "triggerReason": {"Started": "CablePluggedIn", "Ended": "EVCommunicationLost"}.get(
                                   kind, "MeterValuePeriodic")}
    if evse:
        payload["evse"] = {"id": 1, "connectorId": 1}
    if offline:
        payload["offline"] = True
    if energy_wh is not None:
        payload["meterValue"] = [{"timestamp": ts, "sampledValue": [
            {"value": energy_wh, "measurand": "Energy.Active.Import.Register"}]}]
    return payload


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def test_summaries_follow_started_instants_and_the_first_ended(tmp_path: Path, backend: str) -> None:
    site = Site(tmp_path, {"transformers": {"T1": {"capacity_kw": 100, "members": ["SUM-*"]}}}, backend=backend)
    try:
        async with daemon(site), Api(site) as api:
            st = await RawStation.connect(site.ws_url, "SUM-1")
            try:
                await st.boot()
                frames = [
                    # A: Started at 12:00+02:00 (10:00Z); an Updated at 11:00Z sorts before it as text.
                    event("Started", 0, "2024-03-01T12:00:00+02:00", "A", evse=True, energy_wh=0),
                    event("Updated", 1, "2024-03-01T11:00:00Z", "A", energy_wh=500),
                    # B: an offline Updated stamped before the Started (the station's clock jumped).
                    event("Updated", 1, "2024-03-01T09:00:00Z", "B", evse=True, offline=True, energy_wh=10),
                    event("Started", 0, "2024-03-01T10:00:00Z", "B", evse=True, energy_wh=0),
                    # C: the Started never arrived: the lowest seqNo decides, whatever the arrival order.
                    event("Updated", 3, "2024-03-01T10:05:00Z", "C", evse=True, energy_wh=300),
                    event("Updated", 2, "2024-03-01T10:02:00Z", "C", energy_wh=200),
                    # D: two Ended events (different seqNo): the first one stands.
                    event("Started", 0, "2024-03-01T10:00:00Z", "D", evse=True, energy_wh=0),
                    event("Ended", 1, "2024-03-01T11:00:00Z", "D", energy_wh=1000, stopped_reason="EVDisconnected"),
                    event("Ended", 2, "2024-03-01T11:30:00Z", "D", energy_wh=2000, stopped_reason="Remote"),
                    # E: ended_at compared as an instant too: 13:10+02:00 is 11:10Z, after an Updated at 11:05Z.
                    event("Started", 0, "2024-03-01T11:00:00Z", "E", evse=True, energy_wh=0),
                    event("Ended", 2, "2024-03-01T13:10:00+02:00", "E", energy_wh=700, stopped_reason="Local"),
                    event("Updated", 1, "2024-03-01T11:05:00Z", "E", offline=True, energy_wh=400),
                ]
                for frame in frames:
                    assert (await st.call("TransactionEvent", frame))[0] == 3
            finally:
                await st.close()
            tx = {t: await api.get(f"/api/transactions/SUM-1/{t}") for t in "ABCDE"}
            assert at(tx["A"]["started_at"]) == at("2024-03-01T10:00:00Z"), tx["A"]["started_at"]
            assert at(tx["B"]["started_at"]) == at("2024-03-01T10:00:00Z"), tx["B"]["started_at"]
            assert at(tx["C"]["started_at"]) == at("2024-03-01T10:02:00Z"), tx["C"]["started_at"]
            d = tx["D"]
            assert (d["stopped_reason"], d["energy_wh"], at(d["ended_at"])) == (
                "EVDisconnected", 1000, at("2024-03-01T11:00:00Z")), d
            e = tx["E"]
            assert (e["active"], e["energy_wh"], at(e["ended_at"])) == (False, 700, at("2024-03-01T11:10:00Z")), e
            # The list agrees and orders by instant: B and D (10:00Z) and A (10:00Z) before E (11:00Z).
            listed = (await api.get("/api/transactions?station_id=SUM-1"))["transactions"]
            assert {t["transaction_id"]: at(t["started_at"]) for t in listed} == {
                k: at(v["started_at"]) for k, v in tx.items()}
            assert listed[0]["transaction_id"] == "E"
    finally:
        await site.cleanup()

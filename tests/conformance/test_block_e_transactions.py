"""Block E, Transactions: TransactionEvent handling and GetTransactionStatus.

Covers E01.FR.11/12 (the token is verified and idTokenInfo returned with the groupIdToken), E05
(a refused token in Started), TC_E_01..22 (start and stop points: every event answered and
kept, stoppedReason shown), E04/E12 offline events out of order, retransmissions (one stored
event per seqNo), TC_E_53 (seqNo 0 at the start of every transaction) and TC_E_29..34 (E14
GetTransactionStatus through the API, with and without transactionId).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.station import rig, ts

CARD = {"idToken": "E-CARD", "type": "ISO14443"}


async def test_e01_start_update_stop_are_answered_and_kept(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("E-1") as st:
        await r.id_token("E-CARD", group_id="E-GROUP")
        started = await st.transaction("Started", "E-TX1", trigger="CablePluggedIn", id_token=CARD, energy_wh=100,
                                       charging_state="EVConnected")
        assert started["idTokenInfo"]["status"] == "Accepted"  # E01.FR.11
        assert started["idTokenInfo"]["groupIdToken"]["idToken"] == "E-GROUP"  # E01.FR.12
        assert await st.transaction("Updated", "E-TX1", trigger="ChargingStateChanged", energy_wh=900,
                                    charging_state="Charging") == {}
        listed = (await r.get("/api/transactions?station_id=E-1&active=true"))["transactions"]
        assert [(t["transaction_id"], t["evse_id"], t["id_token"]) for t in listed] == [("E-TX1", 1, "E-CARD")]
        await st.transaction("Ended", "E-TX1", trigger="EVCommunicationLost", energy_wh=1500,
                             charging_state="Idle", info={"stoppedReason": "EVDisconnected"})
        detail = await r.get("/api/transactions/E-1/E-TX1")
        assert detail["active"] is False and detail["stopped_reason"] == "EVDisconnected"
        assert [e["eventType"] for e in detail["events"]] == [
            "Started", "Updated", "Ended"]


async def test_e05_a_refused_token_is_answered_with_its_status(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("E-5") as st:
        await r.id_token("E-BLOCKED", status="Blocked")
        answer = await st.transaction("Started", "E-TX5", id_token={"idToken": "E-BLOCKED", "type": "ISO14443"})
        assert answer["idTokenInfo"]["status"] == "Blocked"
        answer = await st.transaction("Updated", "E-TX5", id_token={"idToken": "E-NOBODY", "type": "ISO14443"})
        assert answer["idTokenInfo"]["status"] == "Unknown"


async def test_e53_seq_no_restarts_at_zero_and_retransmissions_are_stored_once(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("E-53") as st:
        await r.id_token("E-CARD")
        for tx in ("E-TXA", "E-TXB"):
            st.seq_no = iter(range(0, 100))
            await st.transaction("Started", tx, id_token=CARD)
            await st.transaction("Ended", tx, info={"stoppedReason": "Local"})
        repeat = {"eventType": "Ended", "timestamp": ts(), "triggerReason": "StopAuthorized", "seqNo": 1,
                  "transactionInfo": {"transactionId": "E-TXB", "stoppedReason": "Local"}}
        assert await st.send("TransactionEvent", repeat) == {}
        assert len((await r.get("/api/transactions/E-53/E-TXB"))["events"]) == 2
        assert len((await r.get("/api/transactions?station_id=E-53"))["transactions"]) == 2


async def test_e04_offline_events_out_of_order_end_the_transaction(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("E-4") as st:
        await r.id_token("E-CARD")
        ended = {"eventType": "Ended", "timestamp": ts(-1), "triggerReason": "EVCommunicationLost", "seqNo": 2,
                 "offline": True, "transactionInfo": {"transactionId": "E-TX4", "stoppedReason": "EVDisconnected"}}
        started = {"eventType": "Started", "timestamp": ts(-10), "triggerReason": "Authorized", "seqNo": 0,
                   "offline": True, "idToken": CARD, "evse": {"id": 1, "connectorId": 1},
                   "transactionInfo": {"transactionId": "E-TX4"}}
        updated = {**started, "eventType": "Updated", "timestamp": ts(-5), "seqNo": 1,
                   "triggerReason": "MeterValuePeriodic"}
        del updated["idToken"]
        for payload in (ended, started, updated):
            await st.send("TransactionEvent", payload)
        detail = await r.get("/api/transactions/E-4/E-TX4")
        assert detail["active"] is False and detail["stopped_reason"] == "EVDisconnected"


@pytest.mark.parametrize("body, expected, answer", [
    ({"transaction_id": "E-TX14"}, {"transactionId": "E-TX14"}, {"ongoingIndicator": True, "messagesInQueue": True}),
    ({"transaction_id": "E-TX14"}, {"transactionId": "E-TX14"}, {"ongoingIndicator": False, "messagesInQueue": False}),
    ({}, {}, {"messagesInQueue": True}),  # TC_E_33: without transactionId
    ({}, {}, {"messagesInQueue": False}),  # TC_E_34
])
async def test_e14_get_transaction_status(tmp_path: Path, body: dict, expected: dict, answer: dict) -> None:
    async with rig(tmp_path) as r, r.station("E-14", answers={"GetTransactionStatus": answer}) as st:
        assert await r.command("E-14", "get-transaction-status", body) == answer
        assert await st.expect("GetTransactionStatus") == expected

"""Block F, Remote control: remote start and stop, unlocking, and TriggerMessage.

Covers TC_F_01..04 (F01/F02: RequestStartTransaction with a remoteStartId that comes back in the
TransactionEvent, F01.FR.08..11: a charging profile in it must be a TxProfile without a
transactionId), the id token of a remote start being honoured in the TransactionEvent that
follows (a Central token the CSMS itself handed out; issue 17 item 1 must not break remote
starts), TC_E_21/F03 (RequestStopTransaction), TC_F_06 (F05 unlock) and TC_F_11..27 (F06
TriggerMessage; F06.FR.13: StatusNotification needs an EVSE; a NotImplemented answer is returned).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.station import rig

TX_PROFILE = {"id": 11, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
              "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}]}


async def test_f01_f02_remote_start_and_the_transaction_it_starts(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("F-1") as st:
        answer = await r.command("F-1", "request-start-transaction",
                                 {"id_token": "APP-USER-7", "evse_id": 1, "remote_start_id": 4711})
        assert answer == {"status": "Accepted"}
        request = await st.expect("RequestStartTransaction")
        assert request == {"remoteStartId": 4711, "idToken": {"idToken": "APP-USER-7", "type": "Central"},
                           "evseId": 1}
        # F02.FR.01: the remoteStartId comes back; the token the CSMS handed out is accepted (not Unknown).
        started = await st.transaction("Started", "F-TX1", trigger="RemoteStart", id_token=request["idToken"],
                                       info={"remoteStartId": 4711})
        assert started["idTokenInfo"]["status"] == "Accepted"
        detail = await r.get("/api/transactions/F-1/F-TX1")
        assert detail["events"][0]["transactionInfo"]["remoteStartId"] == 4711


async def test_f01_charging_profile_must_be_a_tx_profile_without_transaction_id(tmp_path: Path) -> None:
    """F01.FR.09 (purpose TxProfile) and F01.FR.11 (no transactionId): refused, nothing sent."""
    async with rig(tmp_path) as r, r.station("F-2") as st:
        await r.command("F-2", "request-start-transaction", {"id_token": "APP-1", "evse_id": 1,
                                                             "charging_profile": TX_PROFILE})
        assert (await st.expect("RequestStartTransaction"))["chargingProfile"] == TX_PROFILE
        await r.refused("F-2", "request-start-transaction",
                        {"id_token": "APP-1", "charging_profile": {**TX_PROFILE,
                                                                   "chargingProfilePurpose": "TxDefaultProfile"}},
                        field="charging_profile.chargingProfilePurpose")
        await r.refused("F-2", "request-start-transaction",
                        {"id_token": "APP-1", "charging_profile": {**TX_PROFILE, "transactionId": "T"}},
                        field="charging_profile.transactionId")
        assert len(st.calls("RequestStartTransaction")) == 1


@pytest.mark.parametrize("answer", ["Accepted", "Rejected"])
async def test_f03_remote_stop(tmp_path: Path, answer: str) -> None:
    async with rig(tmp_path) as r, r.station("F-3", answers={"RequestStopTransaction": {"status": answer}}) as st:
        assert await r.command("F-3", "request-stop-transaction", {"transaction_id": "F-TX3"}) == {"status": answer}
        assert await st.expect("RequestStopTransaction") == {"transactionId": "F-TX3"}


async def test_f05_unlock_connector(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("F-5") as st:
        assert await r.command("F-5", "unlock-connector", {"evse_id": 1, "connector_id": 1}) == {"status": "Unlocked"}
        assert await st.expect("UnlockConnector") == {"evseId": 1, "connectorId": 1}


@pytest.mark.parametrize("body, expected", [
    ({"requested_message": "MeterValues", "evse_id": 1}, {"requestedMessage": "MeterValues", "evse": {"id": 1}}),
    ({"requested_message": "MeterValues"}, {"requestedMessage": "MeterValues"}),
    ({"requested_message": "TransactionEvent", "evse_id": 1},
     {"requestedMessage": "TransactionEvent", "evse": {"id": 1}}),
    ({"requested_message": "LogStatusNotification"}, {"requestedMessage": "LogStatusNotification"}),
    ({"requested_message": "FirmwareStatusNotification"}, {"requestedMessage": "FirmwareStatusNotification"}),
    ({"requested_message": "Heartbeat"}, {"requestedMessage": "Heartbeat"}),
    ({"requested_message": "StatusNotification", "evse_id": 1, "connector_id": 1},
     {"requestedMessage": "StatusNotification", "evse": {"id": 1, "connectorId": 1}}),
])
async def test_f06_trigger_message(tmp_path: Path, body: dict, expected: dict) -> None:
    async with rig(tmp_path) as r, r.station("F-6") as st:
        assert await r.command("F-6", "trigger-message", body) == {"status": "Accepted"}
        assert await st.expect("TriggerMessage") == expected


async def test_f06_status_notification_needs_an_evse_and_not_implemented_is_returned(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("F-7", answers={"TriggerMessage": {"status": "NotImplemented"}}) as st:
        await r.refused("F-7", "trigger-message", {"requested_message": "StatusNotification"},
                        field="evse_id")  # F06.FR.13
        assert await r.command("F-7", "trigger-message", {"requested_message": "SignV2GCertificate"}) == {
            "status": "NotImplemented"}  # TC_F_27
        assert [p["requestedMessage"] for p in st.calls("TriggerMessage")] == ["SignV2GCertificate"]

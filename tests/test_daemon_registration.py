"""BootNotification under each registration policy, the not-accepted gate, and Authorize from the store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from csms.domain.records import IdTokenRecord, StationRecord
from tests.daemon_fixture import running_daemon
from tests.ocpp_client import RawStation, now_iso
from tests.test_daemon_kit import BOOT, assert_schema_valid

REGISTRATION = {"heartbeat_interval_s": 123, "pending_retry_interval_s": 17}


async def _boot(st: RawStation) -> dict:
    reply = await st.call("BootNotification", BOOT)
    assert reply[0] == 3, reply
    assert_schema_valid("BootNotification", "Response", reply[2])
    return reply[2]


async def _refused(st: RawStation, action: str, payload: dict) -> None:
    reply = await st.call(action, payload)
    assert reply[0] == 4 and reply[2] == "SecurityError", reply


async def test_allow_unknown_accepts_with_configured_heartbeat_interval(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, registration={**REGISTRATION, "policy": "allow_unknown"}) as d:
        st = await RawStation.connect(d.ws_url, "NEW-1")
        answer = await _boot(st)
        assert answer["status"] == "Accepted" and answer["interval"] == 123 and "statusInfo" not in answer
        assert (await st.result("Heartbeat", {}))["currentTime"]
        assert (await d.daemon.store.get_station("NEW-1")).registration == "Accepted"
        await st.close()


async def test_approve_unknown_keeps_station_pending_until_an_operator_registers_it(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, registration={**REGISTRATION, "policy": "approve_unknown"}) as d:
        store = d.daemon.store
        st = await RawStation.connect(d.ws_url, "NEW-2")
        for _ in range(2):  # a second boot while still pending is answered the same way
            answer = await _boot(st)
            assert answer["status"] == "Pending" and answer["interval"] == 17
            assert answer["statusInfo"]["reasonCode"] == "Unregistered"
        await _refused(st, "Heartbeat", {})
        await _refused(st, "StatusNotification", {"timestamp": now_iso(), "connectorStatus": "Available",
                                                  "evseId": 1, "connectorId": 1})
        assert await store.list_connectors("NEW-2") == []  # a refused message stores nothing
        record = await store.get_station("NEW-2")
        assert record.registration == "Pending"
        record.registered = True
        await store.put_station(record)
        answer = await _boot(st)
        assert answer["status"] == "Accepted" and answer["interval"] == 123
        await st.result("StatusNotification", {"timestamp": now_iso(), "connectorStatus": "Available",
                                               "evseId": 1, "connectorId": 1})
        assert [c["status"] for c in await store.list_connectors("NEW-2")] == ["Available"]
        await st.close()


async def test_registered_only_rejects_unknown_and_accepts_registered(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, registration={**REGISTRATION, "policy": "registered_only"}) as d:
        await d.daemon.store.put_station(StationRecord("KNOWN", registered=True))
        stranger = await RawStation.connect(d.ws_url, "STRANGER")
        answer = await _boot(stranger)
        assert answer["status"] == "Rejected" and answer["statusInfo"]["reasonCode"] == "Unregistered"
        await _refused(stranger, "Heartbeat", {})
        known = await RawStation.connect(d.ws_url, "KNOWN")
        assert (await _boot(known))["status"] == "Accepted"
        assert (await known.result("Heartbeat", {}))["currentTime"]
        await stranger.close()
        await known.close()


async def test_blocked_station_is_rejected_and_stays_blocked(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, registration={**REGISTRATION, "policy": "allow_unknown"}) as d:
        await d.daemon.store.put_station(StationRecord("BAD", registration="Blocked", registered=True))
        st = await RawStation.connect(d.ws_url, "BAD")
        answer = await _boot(st)
        assert answer["status"] == "Rejected" and answer["statusInfo"]["reasonCode"] == "Blocked"
        await _refused(st, "Heartbeat", {})
        await _refused(st, "TransactionEvent", {"eventType": "Started", "timestamp": now_iso(),
                                                "triggerReason": "Authorized", "seqNo": 0,
                                                "transactionInfo": {"transactionId": "T"}})
        assert (await d.daemon.store.get_station("BAD")).registration == "Blocked"
        assert await d.daemon.store.list_transactions(station_id="BAD") == []
        await st.close()


async def test_accepted_station_may_talk_after_reconnecting_without_a_new_boot(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as d:
        st = await RawStation.connect(d.ws_url, "BACK")
        await _boot(st)
        await st.close()
        again = await RawStation.connect(d.ws_url, "BACK")
        assert (await again.result("Heartbeat", {}))["currentTime"]
        await again.close()


async def test_unaccepted_station_is_refused_before_its_payload_is_even_checked(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, registration={"policy": "registered_only"}) as d:
        st = await RawStation.connect(d.ws_url, "NOBOOT")
        await _refused(st, "Heartbeat", {})
        await _refused(st, "MeterValues", {"evseId": 1, "meterValue": []})
        await st.close()


NOW = datetime.now(timezone.utc)


@pytest.mark.parametrize("record, expected", [
    (IdTokenRecord("TOK", status="Accepted", group_id="FLEET"), "Accepted"),
    (IdTokenRecord("TOK", status="Invalid"), "Invalid"),
    (IdTokenRecord("TOK", status="Blocked"), "Blocked"),
    (IdTokenRecord("TOK", status="Expired"), "Expired"),
    (IdTokenRecord("TOK", status="Accepted", expiry=NOW - timedelta(days=1)), "Expired"),
    (IdTokenRecord("TOK", status="Accepted", expiry=NOW + timedelta(days=1)), "Accepted"),
    (None, "Unknown"),
])
async def test_authorize_answers_from_the_token_store(tmp_path: Path, record: IdTokenRecord | None,
                                                      expected: str) -> None:
    async with running_daemon(tmp_path, registration={"accept_unknown_id_tokens": False}) as d:
        if record is not None:
            await d.daemon.store.put_id_token(record)
        st = await RawStation.connect(d.ws_url, "AUTH")
        await _boot(st)
        answer = await st.result("Authorize", {"idToken": {"idToken": "TOK", "type": "ISO14443"}})
        assert_schema_valid("Authorize", "Response", answer)
        info = answer["idTokenInfo"]
        assert info["status"] == expected
        if record is not None and record.group_id:
            assert info["groupIdToken"]["idToken"] == "FLEET"
        if record is not None and record.expiry is not None:
            assert datetime.fromisoformat(info["cacheExpiryDateTime"].replace("Z", "+00:00")) == record.expiry
        # The same verdict comes back inside a TransactionEvent that carries the token.
        tx = await st.result("TransactionEvent", {
            "eventType": "Started", "timestamp": now_iso(), "triggerReason": "Authorized", "seqNo": 0,
            "transactionInfo": {"transactionId": "TX-AUTH"}, "idToken": {"idToken": "TOK", "type": "ISO14443"}})
        assert tx["idTokenInfo"]["status"] == expected
        await st.close()


async def test_unknown_tokens_accepted_when_configured(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, registration={"accept_unknown_id_tokens": True}) as d:
        st = await RawStation.connect(d.ws_url, "AUTH2")
        await _boot(st)
        answer = await st.result("Authorize", {"idToken": {"idToken": "NEVER-SEEN", "type": "ISO14443"}})
        assert answer["idTokenInfo"]["status"] == "Accepted"
        await st.close()

"""Block G, Availability: status notifications, heartbeats, change availability, lock failures.

G01 StatusNotification (stored, shown by the API), G02 Heartbeat, G03/G04 ChangeAvailability of an
EVSE, a connector or the whole station (TC_G_03..TC_G_17) through the operator API, G05 a lock
failure reported with NotifyEvent (G05.FR.03).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.conformance.station import rig, ts


async def test_g01_status_notifications_are_answered_and_kept(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("G-1") as st:
        await st.status(1, "Available")
        await st.status(2, "Occupied")
        await st.status(1, "Faulted")
        detail = await r.get("/api/stations/G-1")
        assert [(e["evse_id"], [c["status"] for c in e["connectors"]]) for e in detail["evses"]] == [
            (1, ["Faulted"]), (2, ["Occupied"])]


async def test_g02_heartbeat_answers_the_current_time(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("G-2") as st:
        answer = await st.send("Heartbeat", {})
        now = datetime.fromisoformat(answer["currentTime"].replace("Z", "+00:00"))
        assert abs((now - datetime.now(timezone.utc)).total_seconds()) < 5
        assert answer["currentTime"].endswith("Z")


@pytest.mark.parametrize("body, expected", [
    ({"status": "Inoperative", "evse_id": 1}, {"operationalStatus": "Inoperative", "evse": {"id": 1}}),  # TC_G_03
    ({"status": "Operative", "evse_id": 1}, {"operationalStatus": "Operative", "evse": {"id": 1}}),  # TC_G_04
    ({"status": "Inoperative"}, {"operationalStatus": "Inoperative"}),  # TC_G_05 (whole station)
    ({"status": "Operative"}, {"operationalStatus": "Operative"}),  # TC_G_06
    ({"status": "Inoperative", "evse_id": 1, "connector_id": 1},
     {"operationalStatus": "Inoperative", "evse": {"id": 1, "connectorId": 1}}),  # TC_G_07
])
async def test_g03_g04_change_availability_through_the_api(tmp_path: Path, body: dict, expected: dict) -> None:
    async with rig(tmp_path) as r, r.station("G-3") as st:
        assert await r.command("G-3", "change-availability", body) == {"status": "Accepted"}
        assert await st.expect("ChangeAvailability") == expected


async def test_g03_scheduled_answer_with_a_transaction_ongoing_is_returned(tmp_path: Path) -> None:
    """TC_G_11/14/17: with a transaction ongoing the station answers Scheduled; the operator sees it."""
    async with rig(tmp_path) as r, r.station("G-4", answers={"ChangeAvailability": {"status": "Scheduled"}}) as st:
        await r.id_token("G-CARD")
        await st.transaction("Started", "G-TX", id_token={"idToken": "G-CARD", "type": "ISO14443"})
        assert await r.command("G-4", "change-availability", {"status": "Inoperative", "evse_id": 1}) == {
            "status": "Scheduled"}


async def test_g05_lock_failure_event_gets_an_empty_answer_and_is_kept(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("G-5") as st:
        answer = await st.send("NotifyEvent", {"generatedAt": ts(), "seqNo": 0, "eventData": [{
            "eventId": 1, "timestamp": ts(), "trigger": "Delta", "actualValue": "true",
            "eventNotificationType": "HardWiredNotification",
            "component": {"name": "ConnectorPlugRetentionLock", "evse": {"id": 1, "connectorId": 1}},
            "variable": {"name": "Problem"}}]})
        assert answer == {}  # G05.FR.03 / N07.FR.03: an empty NotifyEventResponse
        detail = await r.get("/api/stations/G-5")
        assert any(v["component"] == "ConnectorPlugRetentionLock" and v["value"] == "true"
                   for v in detail["variables"])

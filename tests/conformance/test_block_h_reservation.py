"""Block H, Reservation (issue 17 item 9): ReserveNow / CancelReservation as typed commands with the
reservation kept by the central system, its expiry, ReservationStatusUpdate and its use.

Covers TC_H_01 (specific EVSE), TC_H_08 (unspecified EVSE), TC_H_15 (connector type), TC_H_19 (the
groupIdToken of the token's group is sent), TC_H_22 and friends (Rejected / Occupied answers kept),
TC_H_17 (H02 cancel), TC_H_07/H04 (ReservationStatusUpdate Expired / Removed), H03 (a transaction
carrying the reservationId uses it) and the central system's own expiry.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conformance.station import Rig, iso, rig
from tests.waiting import until


async def _reservation(r: Rig, reservation_id: int) -> dict:
    return await r.get(f"/api/reservations/{reservation_id}")


async def test_h01_reserve_a_specific_evse_for_a_group_member(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("H-1") as st:
        await r.id_token("H-CARD", type_="ISO15693", group_id="H-FLEET")
        before = datetime.now(timezone.utc)
        assert await r.command("H-1", "reserve-now", {"id_token": "H-CARD", "evse_id": 1, "expiry_s": 600}) == {
            "status": "Accepted"}
        sent = await st.expect("ReserveNow")
        assert isinstance(sent["id"], int) and sent["evseId"] == 1
        assert sent["idToken"] == {"idToken": "H-CARD", "type": "ISO15693"}
        assert sent["groupIdToken"]["idToken"] == "H-FLEET"  # TC_H_19
        expiry = datetime.fromisoformat(sent["expiryDateTime"].replace("Z", "+00:00"))
        assert timedelta(seconds=590) <= expiry - before <= timedelta(seconds=610)
        kept = await _reservation(r, sent["id"])
        assert (kept["station_id"], kept["evse_id"], kept["id_token"], kept["status"], kept["active"]) == (
            "H-1", 1, "H-CARD", "Accepted", True)
        listed = (await r.get("/api/reservations?station_id=H-1&active=true"))["reservations"]
        assert [x["reservation_id"] for x in listed] == [sent["id"]]


async def test_h01_unspecified_evse_and_connector_type(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("H-2") as st:
        await r.id_token("H-CARD")
        await r.command("H-2", "reserve-now", {"id_token": "H-CARD"})  # TC_H_08
        sent = await st.expect("ReserveNow")
        assert "evseId" not in sent and "connectorType" not in sent
        await r.command("H-2", "reserve-now", {"id_token": "H-CARD", "connector_type": "cType2"})  # TC_H_15
        assert (await st.expect("ReserveNow"))["connectorType"] == "cType2"
        ids = [p["id"] for p in st.calls("ReserveNow")]
        assert len(set(ids)) == 2  # every reservation gets its own id


@pytest.mark.parametrize("answer", ["Occupied", "Rejected", "Faulted", "Unavailable"])
async def test_h01_refusals_are_kept_and_never_active(tmp_path: Path, answer: str) -> None:
    async with rig(tmp_path) as r, r.station("H-3", answers={"ReserveNow": {"status": answer}}) as st:
        await r.id_token("H-CARD")
        assert await r.command("H-3", "reserve-now", {"id_token": "H-CARD", "evse_id": 1}) == {"status": answer}
        kept = await _reservation(r, (await st.expect("ReserveNow"))["id"])
        assert kept["status"] == answer and kept["active"] is False


async def test_h02_cancel_a_reservation(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("H-4") as st:
        await r.id_token("H-CARD")
        await r.command("H-4", "reserve-now", {"id_token": "H-CARD", "evse_id": 1})
        reservation_id = (await st.expect("ReserveNow"))["id"]
        assert await r.command("H-4", "cancel-reservation", {"reservation_id": reservation_id}) == {
            "status": "Accepted"}
        assert await st.expect("CancelReservation") == {"reservationId": reservation_id}
        kept = await _reservation(r, reservation_id)
        assert kept["status"] == "Cancelled" and kept["active"] is False
        await r.refused("H-4", "cancel-reservation", {"reservation_id": 999999}, field="reservation_id")


@pytest.mark.parametrize("update", ["Expired", "Removed"])
async def test_h04_reservation_status_update_ends_it(tmp_path: Path, update: str) -> None:
    async with rig(tmp_path) as r, r.station("H-5") as st:
        await r.id_token("H-CARD")
        await r.command("H-5", "reserve-now", {"id_token": "H-CARD", "evse_id": 1})
        reservation_id = (await st.expect("ReserveNow"))["id"]
        assert await st.send("ReservationStatusUpdate", {"reservationId": reservation_id,
                                                         "reservationUpdateStatus": update}) == {}
        kept = await _reservation(r, reservation_id)
        assert kept["status"] == update and kept["active"] is False


async def test_h03_a_transaction_with_the_reservation_id_uses_it(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("H-6") as st:
        await r.id_token("H-CARD")
        await r.command("H-6", "reserve-now", {"id_token": "H-CARD", "evse_id": 1})
        reservation_id = (await st.expect("ReserveNow"))["id"]
        answer = await st.transaction("Started", "H-TX", id_token={"idToken": "H-CARD", "type": "ISO14443"},
                                      reservationId=reservation_id)
        assert answer["idTokenInfo"]["status"] == "Accepted"
        kept = await _reservation(r, reservation_id)
        assert (kept["status"], kept["transaction_id"], kept["active"]) == ("Used", "H-TX", False)


async def test_h01_the_central_system_expires_reservations_itself(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("H-7") as st:
        await r.id_token("H-CARD")
        await r.command("H-7", "reserve-now", {"id_token": "H-CARD", "evse_id": 1, "expiry_s": 1})
        reservation_id = (await st.expect("ReserveNow"))["id"]

        async def expired() -> bool:
            return (await _reservation(r, reservation_id))["status"] == "Expired"
        await until(expired, timeout=5, what="reservation expired by the CSMS clock")


async def test_h01_invalid_reservations_are_refused(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("H-8") as st:
        await r.id_token("H-CARD")
        past = iso(datetime.now(timezone.utc) - timedelta(minutes=1))
        await r.refused("H-8", "reserve-now", {"id_token": "H-CARD", "expiry": past}, field="expiry")
        await r.refused("H-8", "reserve-now", {"id_token": "H-CARD", "evse_id": 0}, field="evse_id")
        await r.refused("H-8", "reserve-now", {"evse_id": 1}, field="id_token")
        assert st.calls("ReserveNow") == []
        assert (await r.api.get("/api/reservations/424242"))[0] == 404

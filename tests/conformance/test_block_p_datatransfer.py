"""Block P, DataTransfer: both directions.

Covers P01 (a typed data-transfer command; the station's answer returned as is), TC_P_02 (P02.FR.06:
an unknown vendorId is answered UnknownVendorId; P02.FR.07 UnknownMessageId is a recipient's choice,
never a CALLERROR) and TC_P_03 (customData on a message is accepted and does not break anything).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.station import rig


@pytest.mark.parametrize("answer", [{"status": "Accepted", "data": {"pong": 1}}, {"status": "UnknownMessageId"},
                                    {"status": "UnknownVendorId"}, {"status": "Rejected"}])
async def test_p01_data_transfer_to_the_station(tmp_path: Path, answer: dict) -> None:
    async with rig(tmp_path) as r, r.station("P-1", answers={"DataTransfer": answer}) as st:
        got = await r.command("P-1", "data-transfer", {"vendor_id": "nl.netbewust", "message_id": "ping",
                                                       "data": {"ping": 1}})
        assert got == answer
        assert await st.expect("DataTransfer") == {"vendorId": "nl.netbewust", "messageId": "ping",
                                                   "data": {"ping": 1}}
        await r.refused("P-1", "data-transfer", {"message_id": "ping"}, field="vendor_id")


async def test_p02_data_transfer_from_an_unknown_vendor(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("P-2") as st:
        answer = await st.send("DataTransfer", {"vendorId": "com.unknown", "messageId": "x", "data": "hello"})
        assert answer["status"] == "UnknownVendorId"  # P02.FR.06


async def test_p03_custom_data_is_accepted(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("P-3") as st:
        answer = await st.send("Heartbeat", {"customData": {"vendorId": "com.example", "extra": 1}})
        assert answer["currentTime"]
        await st.status(1)
        answer = await st.send("StatusNotification", {"timestamp": "2025-01-01T00:00:00Z", "connectorStatus":
                                                      "Available", "evseId": 2, "connectorId": 1,
                                                      "customData": {"vendorId": "com.example", "x": [1, 2]}})
        assert answer == {}

"""Block O, Display messages (issue 17 item 9): typed Set/Get/ClearDisplayMessage with the
messages the central system set, the station's verdicts and its reports kept.

Covers TC_O_01 (O01), TC_O_06/10/27/28 (O02: for a transaction; O01.FR.04: no transactionId
otherwise), TC_O_13/14 (O01.FR.05: start and end time), TC_O_17..19/26 (NotSupported* / Rejected
answers kept), TC_O_25 (a specific state), TC_O_12 (O06 replace by id), TC_O_02/03/07..11 (O03/O04
GetDisplayMessages and the NotifyDisplayMessages report) and TC_O_04/05 (O05 clear, Unknown kept).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.station import rig, ts


async def test_o01_set_a_message_and_keep_it(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("O-1") as st:
        start, end = ts(1), ts(61)
        answer = await r.command("O-1", "set-display-message", {
            "id": 5, "priority": "InFront", "content": "Grid peak: charging slower until 20:00", "language": "en",
            "start_date_time": start, "end_date_time": end})
        assert answer == {"status": "Accepted"}
        sent = (await st.expect("SetDisplayMessage"))["message"]
        assert sent["id"] == 5 and sent["priority"] == "InFront"
        assert sent["message"] == {"format": "UTF8", "language": "en",
                                   "content": "Grid peak: charging slower until 20:00"}
        assert "transactionId" not in sent  # O01.FR.04
        assert (sent["startDateTime"], sent["endDateTime"]) == (start, end)  # O01.FR.05
        [kept] = (await r.get("/api/stations/O-1/display-messages"))["messages"]
        assert (kept["id"], kept["status"], kept["content"]) == (5, "Accepted",
                                                                 "Grid peak: charging slower until 20:00")

        # O06: the same id replaces the message.
        await r.command("O-1", "set-display-message", {"id": 5, "priority": "AlwaysFront", "content": "Updated",
                                                       "state": "Charging"})
        assert (await st.expect("SetDisplayMessage"))["message"]["state"] == "Charging"  # TC_O_25
        [kept] = (await r.get("/api/stations/O-1/display-messages"))["messages"]
        assert (kept["priority"], kept["content"]) == ("AlwaysFront", "Updated")


async def test_o02_message_for_a_transaction(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("O-2") as st:
        await r.command("O-2", "set-display-message", {"priority": "NormalCycle", "content": "Enjoy",
                                                       "transaction_id": "O-TX"})
        sent = (await st.expect("SetDisplayMessage"))["message"]
        assert sent["transactionId"] == "O-TX" and isinstance(sent["id"], int)
        st.answers["SetDisplayMessage"] = {"status": "UnknownTransaction"}  # TC_O_10
        assert await r.command("O-2", "set-display-message", {"priority": "NormalCycle", "content": "x",
                                                              "transaction_id": "NOPE"}) == {
            "status": "UnknownTransaction"}


@pytest.mark.parametrize("answer", ["NotSupportedMessageFormat", "NotSupportedPriority", "NotSupportedState",
                                    "Rejected"])
async def test_o01_refusals_are_kept(tmp_path: Path, answer: str) -> None:
    async with rig(tmp_path) as r, r.station("O-3", answers={"SetDisplayMessage": {"status": answer}}):
        assert await r.command("O-3", "set-display-message", {"id": 9, "priority": "InFront",
                                                              "content": "<b>hi</b>", "format": "HTML"}) == {
            "status": answer}
        [kept] = (await r.get("/api/stations/O-3/display-messages"))["messages"]
        assert kept["status"] == answer


async def test_o01_invalid_messages_are_refused(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("O-4") as st:
        await r.refused("O-4", "set-display-message", {"content": "no priority"}, field="priority")
        await r.refused("O-4", "set-display-message", {"priority": "InFront"}, field="content")
        await r.refused("O-4", "set-display-message", {"priority": "InFront", "content": "x" * 513}, field="content")
        await r.refused("O-4", "set-display-message", {"priority": "InFront", "content": "x",
                                                       "start_date_time": ts(10), "end_date_time": ts(5)},
                        field="end_date_time")
        assert st.calls("SetDisplayMessage") == []


async def test_o03_o04_get_messages_and_the_report(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("O-5", answers={"GetDisplayMessages": {"status": "Accepted"}}) as st:
        assert await r.command("O-5", "get-display-messages", {"request_id": 12, "ids": [5], "priority": "InFront",
                                                               "state": "Charging"}) == {"status": "Accepted"}
        assert await st.expect("GetDisplayMessages") == {"requestId": 12, "id": [5], "priority": "InFront",
                                                         "state": "Charging"}
        info = {"id": 5, "priority": "InFront", "message": {"format": "UTF8", "content": "Hello"}}
        assert await st.send("NotifyDisplayMessages", {"requestId": 12, "tbc": False, "messageInfo": [info]}) == {}
        state = await r.get("/api/stations/O-5/display-messages")
        assert [(m["id"], m["content"]) for m in state["reported"]] == [(5, "Hello")]
        st.answers["GetDisplayMessages"] = {"status": "Unknown"}  # TC_O_03 / TC_O_11
        assert await r.command("O-5", "get-display-messages", {}) == {"status": "Unknown"}
        assert isinstance((await st.expect("GetDisplayMessages"))["requestId"], int)


async def test_o05_clear_a_message(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("O-6") as st:
        await r.command("O-6", "set-display-message", {"id": 3, "priority": "InFront", "content": "x"})
        assert await r.command("O-6", "clear-display-message", {"id": 3}) == {"status": "Accepted"}
        assert await st.expect("ClearDisplayMessage") == {"id": 3}
        assert (await r.get("/api/stations/O-6/display-messages"))["messages"] == []
        st.answers["ClearDisplayMessage"] = {"status": "Unknown"}  # TC_O_05
        assert await r.command("O-6", "clear-display-message", {"id": 77}) == {"status": "Unknown"}

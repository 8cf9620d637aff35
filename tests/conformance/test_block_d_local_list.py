"""Block D, Local authorisation list management (issue 17 item 8).

The operator manages each station's list through the API; the central system builds the
SendLocalList from its id-token records, numbers the versions, and keeps what the station
confirmed in the store. Covers TC_D_01 (Full), TC_D_02 (Differential update), TC_D_03
(Differential remove), TC_D_04 (Full with an empty list), TC_D_08/09 (GetLocalListVersion),
D01.FR.01 (type and version in every request), D01.FR.06 (unique tokens), D01.FR.17 (removal =
an entry without idTokenInfo) and D01.FR.18 (versions > 0).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tests.conformance.station import Rig, rig


async def _tokens(r: Rig) -> None:
    await r.id_token("D-A", group_id="FLEET-1")
    await r.id_token("D-B", type_="ISO15693")
    await r.id_token("D-X", status="Blocked")
    await r.id_token("D-C")


def _listed(payload: dict) -> dict[str, dict]:
    return {e["idToken"]["idToken"]: e for e in payload.get("localAuthorizationList", [])}


async def test_d01_full_differential_and_empty_lists_with_versions(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("D-1") as st:
        await _tokens(r)
        assert (await r.get("/api/stations/D-1/local-list"))["version"] == 0

        # TC_D_01: Full. Every entry carries the status the CSMS holds (a blocked card is listed as Blocked).
        assert await r.command("D-1", "send-local-list", {"update_type": "Full",
                                                          "id_tokens": ["D-A", "D-B", "D-X"]}) == {"status": "Accepted"}
        sent = await st.expect("SendLocalList")
        assert sent["updateType"] == "Full" and sent["versionNumber"] == 1  # D01.FR.01, D01.FR.18
        entries = _listed(sent)
        assert set(entries) == {"D-A", "D-B", "D-X"}
        assert entries["D-A"]["idTokenInfo"]["status"] == "Accepted"
        assert entries["D-A"]["idTokenInfo"]["groupIdToken"]["idToken"] == "FLEET-1"
        assert entries["D-B"]["idToken"]["type"] == "ISO15693"
        assert entries["D-X"]["idTokenInfo"]["status"] == "Blocked"
        state = await r.get("/api/stations/D-1/local-list")
        assert state["version"] == 1 and {t["id_token"] for t in state["id_tokens"]} == {"D-A", "D-B", "D-X"}

        # TC_D_02: Differential update.
        await r.command("D-1", "send-local-list", {"update_type": "Differential", "add": ["D-C"]})
        sent = await st.expect("SendLocalList")
        assert (sent["updateType"], sent["versionNumber"]) == ("Differential", 2)
        assert _listed(sent)["D-C"]["idTokenInfo"]["status"] == "Accepted"

        # TC_D_03: Differential remove (D01.FR.17: an entry without idTokenInfo).
        await r.command("D-1", "send-local-list", {"update_type": "Differential", "remove": ["D-A"]})
        sent = await st.expect("SendLocalList")
        assert sent["versionNumber"] == 3 and _listed(sent)["D-A"] == {"idToken": {"idToken": "D-A",
                                                                                    "type": "ISO14443"}}
        state = await r.get("/api/stations/D-1/local-list")
        assert state["version"] == 3 and {t["id_token"] for t in state["id_tokens"]} == {"D-B", "D-X", "D-C"}

        # TC_D_04: Full with an empty list clears it.
        await r.command("D-1", "send-local-list", {"update_type": "Full", "id_tokens": []})
        sent = await st.expect("SendLocalList")
        assert sent["versionNumber"] == 4 and sent.get("localAuthorizationList", []) == []
        assert (await r.get("/api/stations/D-1/local-list"))["id_tokens"] == []


async def test_d01_refused_updates_leave_the_stored_list_and_versions_follow_the_station(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("D-2") as st:
        await _tokens(r)
        await r.command("D-2", "send-local-list", {"update_type": "Full", "id_tokens": ["D-A"]})
        st.answers["SendLocalList"] = {"status": "Failed"}
        assert await r.command("D-2", "send-local-list", {"update_type": "Differential", "add": ["D-B"]}) == {
            "status": "Failed"}
        state = await r.get("/api/stations/D-2/local-list")
        assert state["version"] == 1 and [t["id_token"] for t in state["id_tokens"]] == ["D-A"]

        # The station's list moved on without us (VersionMismatch): ask, then send a Full above its version.
        st.answers["SendLocalList"] = {"status": "VersionMismatch"}
        await r.command("D-2", "send-local-list", {"update_type": "Differential", "add": ["D-B"]})
        st.answers["GetLocalListVersion"] = {"versionNumber": 7}
        assert await r.command("D-2", "get-local-list-version") == {"versionNumber": 7}  # TC_D_08
        assert (await r.get("/api/stations/D-2/local-list"))["reported_version"] == 7
        st.answers["SendLocalList"] = {"status": "Accepted"}
        await r.command("D-2", "send-local-list", {"update_type": "Full", "id_tokens": ["D-A", "D-B"]})
        assert st.calls("SendLocalList")[-1]["versionNumber"] == 8


async def test_d02_no_list_installed_is_version_zero(tmp_path: Path) -> None:
    """TC_D_09: versionNumber 0 means no list; the CSMS keeps that answer."""
    async with rig(tmp_path) as r, r.station("D-3") as st:
        assert await r.command("D-3", "get-local-list-version") == {"versionNumber": 0}
        assert await st.expect("GetLocalListVersion") == {}
        state = await r.get("/api/stations/D-3/local-list")
        assert state["reported_version"] == 0 and state["version"] == 0


async def test_d01_bad_requests_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("D-4") as st:
        await _tokens(r)
        await r.refused("D-4", "send-local-list", {"update_type": "Full", "id_tokens": ["D-A", "D-A"]},
                        field="id_tokens")  # D01.FR.06
        await r.refused("D-4", "send-local-list", {"update_type": "Full", "id_tokens": ["NOBODY"]},
                        field="id_tokens[0]")
        await r.refused("D-4", "send-local-list", {"update_type": "Full"}, field="id_tokens")
        await r.refused("D-4", "send-local-list", {"update_type": "Differential"})
        await r.refused("D-4", "send-local-list", {"update_type": "Sometimes", "id_tokens": []}, field="update_type")
        assert st.calls("SendLocalList") == []
        assert (await r.api.get("/api/stations/NOPE/local-list"))[0] == 404


async def test_d01_the_list_is_kept_in_the_store_across_a_restart_and_shown_by_the_cli(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("D-5"):
        await _tokens(r)
        await r.command("D-5", "send-local-list", {"update_type": "Full", "id_tokens": ["D-A", "D-C"]})
    async with rig(tmp_path) as r:
        state = await r.get("/api/stations/D-5/local-list")
        assert state["version"] == 1 and {t["id_token"] for t in state["id_tokens"]} == {"D-A", "D-C"}
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("CSMS_")},
               "CSMS_API_URL": r.api.url, "CSMS_API_TOKEN": r.api.admin_token}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", "local-list", "D-5", "--json",
                                                    env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert json.loads(out)["version"] == 1

"""Id tokens through the operator API, and their effect on a station's Authorize."""

from __future__ import annotations

from pathlib import Path

from tests.api_fixture import api_daemon


async def test_add_list_block_remove(tmp_path: Path) -> None:
    async with api_daemon(tmp_path, registration={"accept_unknown_id_tokens": False}) as api:
        st = await api.station("CS-1")

        async def authorize(token: str) -> str:
            answer = await st.result("Authorize", {"idToken": {"idToken": token, "type": "ISO14443"}})
            return answer["idTokenInfo"]["status"]

        assert await authorize("CARD1") == "Unknown"
        status, body = await api.post("/api/id-tokens", {"id_token": "CARD1", "group_id": "FLEET",
                                                         "expiry": "2099-01-01T00:00:00Z"})
        assert status == 201
        assert body == {"id_token": "CARD1", "type": "ISO14443", "status": "Accepted",
                        "expiry": "2099-01-01T00:00:00+00:00", "group_id": "FLEET"}
        assert await authorize("CARD1") == "Accepted"
        status, _ = await api.post("/api/id-tokens", {"id_token": "CARD0", "type": "Central"})
        assert status == 201
        status, body = await api.post("/api/id-tokens", {"id_token": "CARD0", "type": "Central", "status": "Expired"})
        assert status == 200 and body["status"] == "Expired"
        status, body = await api.get("/api/id-tokens", token="read")
        assert [(t["id_token"], t["status"]) for t in body["id_tokens"]] == [("CARD0", "Expired"), ("CARD1", "Accepted")]
        status, body = await api.post("/api/id-tokens/CARD1/block")
        assert status == 200 and body["status"] == "Blocked"
        assert await authorize("CARD1") == "Blocked"
        assert (await api.get("/api/id-tokens/CARD1"))[1]["status"] == "Blocked"
        status, _ = await api.delete("/api/id-tokens/CARD1")
        assert status == 204
        assert await authorize("CARD1") == "Unknown"
        assert (await api.get("/api/id-tokens/CARD1"))[0] == 404


async def test_invalid_tokens_and_unknown_ones(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        for body, field in (({"id_token": ""}, "id_token"), ({"id_token": "X" * 37}, "id_token"),
                            ({"id_token": "A", "type": "Magic"}, "type"), ({"id_token": "A", "status": "Fine"}, "status"),
                            ({"id_token": "A", "expiry": "soon"}, "expiry"), ({"type": "Central"}, "id_token")):
            status, out = await api.post("/api/id-tokens", body)
            assert status == 422 and out["field"] == field, body
        status, out = await api.post("/api/id-tokens", {"id_token": "A", "expiry": "2099-01-01T00:00:00"})
        assert status == 422 and out["field"] == "expiry"
        for method, path in (("GET", "/api/id-tokens/NOPE"), ("POST", "/api/id-tokens/NOPE/block"),
                             ("DELETE", "/api/id-tokens/NOPE")):
            status, out = await api.request(method, path)
            assert (status, out) == (404, {"error": "unknown id token 'NOPE'"})
        assert await api.daemon.store.list_id_tokens() == []

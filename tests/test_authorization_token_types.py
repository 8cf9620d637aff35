"""Id tokens are looked up whatever their type: a made-up `Central` token is not a key to charge.

Only `NoAuthorization` (free charging) skips the lookup, and only with
`registration.accept_no_authorization`. Played with the `ocpp` package's own 2.0.1 ChargePoint.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import websockets
from ocpp.v201 import ChargePoint, call

from csms.domain.records import IdTokenRecord
from tests.daemon_fixture import running_daemon


async def _authorize(port: int, tokens: list[dict[str, str]]) -> list[dict[str, Any]]:
    async with websockets.connect(f"ws://127.0.0.1:{port}/ocpp/AUTH-1", subprotocols=["ocpp2.0.1"]) as ws:
        cp = ChargePoint("AUTH-1", ws)
        reader = asyncio.create_task(cp.start())
        try:
            await cp.call(call.BootNotification(charging_station={"model": "M", "vendor_name": "V"},
                                                reason="PowerUp"))
            answers = []
            for token in tokens:
                result = await cp.call(call.Authorize(id_token={"id_token": token["idToken"], "type": token["type"]}))
                answers.append(result.id_token_info)
            return answers
        finally:
            reader.cancel()


async def test_central_tokens_are_looked_up_like_any_other(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, registration={"accept_unknown_id_tokens": False}) as rd:
        store = rd.daemon.store
        await store.put_id_token(IdTokenRecord("C-BLOCKED", "Central", "Blocked", None, None))
        past = datetime.now(timezone.utc) - timedelta(days=1)
        await store.put_id_token(IdTokenRecord("C-OLD", "Central", "Accepted", past, None))
        await store.put_id_token(IdTokenRecord("C-GOOD", "Central", "Accepted", None, "FLEET-1"))
        made_up, blocked, expired, good, free = await _authorize(rd.daemon.ws_port, [
            {"idToken": "C-MADE-UP", "type": "Central"}, {"idToken": "C-BLOCKED", "type": "Central"},
            {"idToken": "C-OLD", "type": "Central"}, {"idToken": "C-GOOD", "type": "Central"},
            {"idToken": "", "type": "NoAuthorization"}])
    assert made_up["status"] == "Unknown"
    assert blocked["status"] == "Blocked"
    assert expired["status"] == "Expired"
    assert good["status"] == "Accepted" and good["group_id_token"]["id_token"] == "FLEET-1"
    assert free["status"] == "Unknown"  # NoAuthorization is not accepted unless configured


async def test_no_authorization_is_accepted_only_where_configured(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, registration={"accept_unknown_id_tokens": False,
                                                      "accept_no_authorization": True}) as rd:
        (free,) = await _authorize(rd.daemon.ws_port, [{"idToken": "", "type": "NoAuthorization"}])
    assert free["status"] == "Accepted"

"""A raw OCPP-J test client: sends exact frames and reads exact answers.

The station-message tests use it rather than the `ocpp` package's ChargePoint so they can also
send what a correct client never would (broken frames, wrong types) and see the precise reply.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import datetime, timezone
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class RawStation:
    def __init__(self, ws: ClientConnection, station_id: str) -> None:
        self.ws = ws
        self.station_id = station_id
        self._ids = itertools.count(1)
        self.incoming_calls: asyncio.Queue[list[Any]] = asyncio.Queue()
        self._replies: asyncio.Queue[list[Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())
        self.auto_answer: dict[str, Any] = {}  # action -> response payload (or callable(payload))

    @classmethod
    async def connect(cls, url: str, station_id: str, subprotocols: tuple[str, ...] = ("ocpp2.0.1",),
                      **kwargs: Any) -> RawStation:
        ws = await websockets.connect(f"{url}/{station_id}", subprotocols=list(subprotocols),  # type: ignore[arg-type]
                                      **kwargs)
        return cls(ws, station_id)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if msg[0] == 2 and msg[2] in self.auto_answer:
                    answer = self.auto_answer[msg[2]]
                    payload = answer(msg[3]) if callable(answer) else answer
                    await self.ws.send(json.dumps([3, msg[1], payload]))
                    await self.incoming_calls.put(msg)
                elif msg[0] == 2:
                    await self.incoming_calls.put(msg)
                else:
                    await self._replies.put(msg)
        except websockets.ConnectionClosed:
            pass

    async def send_raw(self, text: str | bytes) -> list[Any]:
        await self.ws.send(text)
        return await asyncio.wait_for(self._replies.get(), 5)

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        """Send a CALL and return the whole reply frame ([3, id, payload] or [4, id, code, desc, details])."""
        uid = f"t{next(self._ids)}"
        reply = await self.send_raw(json.dumps([2, uid, action, payload]))
        assert reply[1] == uid, f"reply to {reply[1]} while waiting for {uid}"
        return reply

    async def result(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        reply = await self.call(action, payload)
        assert reply[0] == 3, f"{action} answered with {reply}"
        return reply[2]

    async def boot(self, vendor: str = "TestVendor", model: str = "TestModel") -> dict[str, Any]:
        return await self.result("BootNotification", {
            "reason": "PowerUp", "chargingStation": {"vendorName": vendor, "model": model,
                                                     "serialNumber": "SN-1", "firmwareVersion": "1.0"}})

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()

"""A running daemon with its operator API, an HTTP client and simulated stations, for API tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from csms.app import Daemon
from tests.daemon_fixture import RunningDaemon, running_daemon
from tests.ocpp_client import RawStation

READ_TOKEN = "read-only-token-for-tests-0123456789"
EXTRA_ADMIN_TOKEN = "admin-token-from-config-0123456789"

# Answers a well-behaved station gives to every typed command.
STATION_ANSWERS: dict[str, Any] = {
    "RequestStartTransaction": {"status": "Accepted"},
    "RequestStopTransaction": {"status": "Accepted"},
    "Reset": {"status": "Accepted"},
    "ChangeAvailability": {"status": "Accepted"},
    "UnlockConnector": {"status": "Unlocked"},
    "TriggerMessage": {"status": "Accepted"},
    "GetVariables": lambda p: {"getVariableResult": [
        {"attributeStatus": "Accepted", "component": i["component"], "variable": i["variable"],
         "attributeValue": "42"} for i in p["getVariableData"]]},
    "SetVariables": lambda p: {"setVariableResult": [
        {"attributeStatus": "Accepted", "component": i["component"], "variable": i["variable"]}
        for i in p["setVariableData"]]},
    "GetBaseReport": {"status": "Accepted"},
    "SetChargingProfile": {"status": "Accepted"},
    "ClearChargingProfile": {"status": "Accepted"},
    "GetChargingProfiles": {"status": "NoProfiles"},
    "GetCompositeSchedule": {"status": "Rejected"},
    "GetTransactionStatus": {"messagesInQueue": False, "ongoingIndicator": True},
    "DataTransfer": {"status": "Accepted"},
}


@dataclass
class Api:
    running: RunningDaemon
    session: aiohttp.ClientSession
    admin_token: str
    stations: list[RawStation] = field(default_factory=list)

    @property
    def daemon(self) -> Daemon:
        return self.running.daemon

    @property
    def url(self) -> str:
        return self.daemon.api.url  # type: ignore[attr-defined]

    async def request(self, method: str, path: str, body: Any = None, *, token: str | None = "admin",
                      raw: bytes | None = None) -> tuple[int, Any]:
        """(status, parsed JSON body or text); token 'admin', 'read', None or a literal token."""
        headers = {}
        value = {"admin": self.admin_token, "read": READ_TOKEN}.get(token, token) if token else None
        if value:
            headers["Authorization"] = f"Bearer {value}"
        kwargs: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
            headers["Content-Type"] = "application/json"
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.url + path, **kwargs) as r:
            if r.content_type == "application/json":
                return r.status, await r.json()
            return r.status, await r.text()

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, body, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, **kw)

    async def station(self, station_id: str, *, boot: bool = True, answers: dict[str, Any] | None = None,
                      evses: int = 0) -> RawStation:
        """A simulated station connected (and booted) to the daemon, answering commands."""
        st = await RawStation.connect(self.running.ws_url, station_id)
        st.auto_answer.update(STATION_ANSWERS if answers is None else answers)
        self.stations.append(st)
        if boot:
            await st.boot()
        for evse in range(1, evses + 1):
            await st.result("StatusNotification", {"timestamp": "2025-01-01T00:00:00Z",
                                                   "connectorStatus": "Available", "evseId": evse, "connectorId": 1})
        return st


@contextlib.asynccontextmanager
async def api_daemon(tmp_path: Path, **overrides: Any) -> AsyncIterator[Api]:
    api_section = {"tokens": [{"name": "viewer", "scope": "read", "token": READ_TOKEN}], **overrides.pop("api", {})}
    async with running_daemon(tmp_path, api=api_section, **overrides) as running:
        server = running.daemon.api  # type: ignore[attr-defined]
        async with aiohttp.ClientSession() as session:
            api = Api(running, session, server.file_token or EXTRA_ADMIN_TOKEN)
            try:
                yield api
            finally:
                for st in api.stations:
                    await st.close()

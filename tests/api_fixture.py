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
        assert self.daemon.api is not None
        return self.daemon.api.url

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
        server = running.daemon.api
        assert server is not None
        async with aiohttp.ClientSession() as session:
            api = Api(running, session, server.file_token or EXTRA_ADMIN_TOKEN)
            try:
                yield api
            finally:
                for st in api.stations:
                    await st.close()


def minimal_answer(action: str, schema_dir: str = "v201") -> dict[str, Any]:
    """The smallest schema-valid response to ``action`` (first enum value, required fields only)."""
    from csms.protocol.schemas import schema_document

    doc = schema_document(schema_dir, action, "Response")
    definitions = doc.get("definitions", {})

    def build(schema: dict[str, Any]) -> Any:
        if "$ref" in schema:
            return build(definitions[schema["$ref"].rsplit("/", 1)[-1]])
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema.get("type")
        if kind == "object":
            return {k: build(schema["properties"][k]) for k in schema.get("required", [])}
        if kind == "array":
            return [build(schema["items"]) for _ in range(schema.get("minItems", 0))]
        if kind == "string":
            return "2025-01-01T00:00:00Z" if schema.get("format") == "date-time" else "x" * schema.get("minLength", 1)
        if kind == "integer":
            return max(0, schema.get("minimum", 0))
        if kind == "number":
            return float(max(0, schema.get("minimum", 0)))
        if kind == "boolean":
            return False
        return None

    return build(doc)


def answer_everything(daemon: Daemon) -> dict[str, Any]:
    """Auto-answers for every action the daemon can send: the typed ones as above, the rest minimal."""
    from csms.api.commands import csms_actions
    from csms.ocpp.versions import DEFAULT_VERSION

    return {**{a: minimal_answer(a) for a in csms_actions(DEFAULT_VERSION.version)}, **STATION_ANSWERS}

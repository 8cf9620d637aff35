"""Every message an OCPP 2.1 station may send, in its smallest schema-valid form, over a real websocket
to the real daemon: each gets a CALLRESULT that is valid against the 2.1 response schema (the
messages 2.1 adds as much as the ones it carries over from 2.0.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from csms.ocpp.v21 import OCPP21
from csms.protocol.schemas import known_actions, schema_document, validate
from tests.daemon_fixture import running_daemon
from tests.ocpp_client import RawStation

pytestmark = pytest.mark.timeout(60)

STATION_SENDS = sorted((OCPP21.station_only | OCPP21.both_ways) & known_actions("v21"))


def minimal_request(action: str) -> dict[str, Any]:
    """The smallest schema-valid 2.1 request (first enum value, required fields only)."""
    doc = schema_document("v21", action, "Request")
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
            return [build(schema["items"]) for _ in range(max(1, schema.get("minItems", 0)))]
        if kind == "string":
            return "2026-01-01T00:00:00.000Z" if schema.get("format") == "date-time" else "x" * schema.get(
                "minLength", 1)
        if kind == "integer":
            return max(1, schema.get("minimum", 1))
        if kind == "number":
            return float(max(0, schema.get("minimum", 0)))
        if kind == "boolean":
            return False
        return None

    payload: dict[str, Any] = build(doc)
    validate("v21", action, "Request", payload)
    return payload


def test_every_station_message_of_21_has_a_handler() -> None:
    from csms.ocpp.package import HandlerDeps
    from csms.ocpp.v21 import build_router

    assert len(STATION_SENDS) >= 35
    router = build_router(HandlerDeps(*([None] * 7)))  # type: ignore[arg-type]  # handlers are only looked up
    assert [a for a in STATION_SENDS if router.handler(a) is None] == []


async def test_every_station_message_of_21_is_answered_schema_valid(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, api={"enabled": False}) as d:
        st = await RawStation.connect(d.ws_url, "EVERY-21", subprotocols=("ocpp2.1",))
        assert st.ws.subprotocol == "ocpp2.1"
        await st.boot()
        failed = {}
        for action in STATION_SENDS:
            reply = await st.call(action, minimal_request(action))
            if reply[0] != 3:
                failed[action] = reply[2:]
                continue
            validate("v21", action, "Response", reply[2])
        await st.close()
        assert failed == {}

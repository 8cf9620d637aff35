"""Issue 16: every oddity at the edge gets a clean answer, and nothing stored can break a reader.

Each test sends the frame or request the issue gives, over a real socket, to a daemon on each
store backend, and then reads back through the operator API (and its live stream) what a
dashboard or ``csms tail`` would read. Policies (docs/protocol.md, "Oddities"):

- date-times: lowercase ``t``/``z``, ``+hhmm`` offsets and leap seconds (``:60``) are normalised
  (``T``, ``Z``, ``+hh:mm``, ``:59.999999``); instants outside years 1-9999 are refused with
  PropertyConstraintViolation naming the field;
- JSON nested deeper than 32 levels: FormatViolation with the frame's own id;
- integers outside the signed 64-bit range: PropertyConstraintViolation naming the field;
- control characters in id tokens: PropertyConstraintViolation naming the field;
- binary websocket frames: closed with 1003; bad station ids and malformed HTTP: 400.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.api_fixture import Api, api_daemon
from tests.edge_kit import BACKENDS, EventStream, backend_overrides, raw_http, upgrade_request
from tests.ocpp_client import RawStation
from tests.test_daemon_kit import transaction_event
from tests.waiting import until

INT64_MAX = 2**63 - 1
MAX_DEPTH = 32  # documented nesting limit of a payload


@pytest.fixture(params=BACKENDS)
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """A daemon on each store backend: for everything that is stored and read back."""
    async with backend_overrides(request.param, tmp_path) as store, api_daemon(tmp_path, store=store) as running:
        yield running


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Api]:
    """One daemon (SQLite) for what is decided before anything is stored (handshake, frames, headers)."""
    async with api_daemon(tmp_path) as running:
        yield running


def ws_port(api: Api) -> int:
    port = urlsplit(api.running.ws_url).port
    assert port is not None
    return port


def nested(depth: int, leaf: Any = "x") -> dict[str, Any]:
    """A customData object nested ``depth`` objects deep (itself included)."""
    value: Any = leaf
    for _ in range(depth - 1):
        value = {"d": value}
    return {"vendorId": "deep", "d": value} if depth > 1 else {"vendorId": "deep"}


def z(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def started(tx_id: str, stamp: str, **extra: Any) -> dict[str, Any]:
    event = transaction_event("Started", tx_id, 0, charging_state="Charging", energy_wh=100.0, ts=stamp)
    event["meterValue"][0]["timestamp"] = stamp
    return {**event, **extra}


async def transactions(api: Api, query: str = "") -> list[dict[str, Any]]:
    status, body = await api.get("/api/transactions" + query)
    assert status == 200, body
    return body["transactions"]


def is_callerror(reply: list[Any], uid: str, code: str) -> bool:
    return reply[0] == 4 and reply[1] == uid and reply[2] == code


# 1. Stored data that breaks readers ----------------------------------------------------------------
@pytest.mark.parametrize("stamp, instant", [
    ("2024-06-01t10:00:00z", datetime(2024, 6, 1, 10, tzinfo=timezone.utc)),
    ("2024-06-01T10:00:00z", datetime(2024, 6, 1, 10, tzinfo=timezone.utc)),
    ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)),
    ("2016-12-31t23:59:60.5z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)),
    ("2024-06-01T12:00:00+0200", datetime(2024, 6, 1, 10, tzinfo=timezone.utc)),
], ids=["lower-t-z", "lower-z", "leap-second", "leap-second-fraction-lower", "offset-without-colon"])
async def test_odd_but_valid_timestamps_are_normalised_and_every_reader_works(api: Api, stamp: str,
                                                                              instant: datetime) -> None:
    st = await api.station("ODD-TS")
    assert (await st.call("TransactionEvent", started("TX-ODD", stamp)))[0] == 3
    [tx] = [t for t in await transactions(api) if t["transaction_id"] == "TX-ODD"]
    assert datetime.fromisoformat(tx["started_at"]) == instant
    # time filters compare instants: the transaction is inside [instant - 1 s, instant + 1 s] ...
    window = f"?since={z(instant - timedelta(seconds=1))}&until={z(instant + timedelta(seconds=1))}"
    assert [t["transaction_id"] for t in await transactions(api, window)] == ["TX-ODD"]
    # ... and outside a window that ends before it
    assert await transactions(api, f"?until={z(instant - timedelta(seconds=1))}") == []
    status, detail = await api.get("/api/transactions/ODD-TS/TX-ODD")
    assert status == 200, detail
    assert [p["energy_wh"] for p in detail["energy_series"]] == [100.0]
    status, _ = await api.get("/api/stations/ODD-TS")
    assert status == 200


@pytest.mark.parametrize("stamp", ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00"])
async def test_timestamps_outside_the_representable_years_are_refused_naming_the_field(api: Api, stamp: str) -> None:
    st = await api.station("FAR-TS")
    reply = await st.call("TransactionEvent", started("TX-FAR", stamp))
    assert reply[0] == 4 and reply[2] == "PropertyConstraintViolation", reply
    assert reply[4]["field"] == "timestamp", reply
    assert await transactions(api) == []


# 2. A station can silence every live view -----------------------------------------------------------
async def test_deep_custom_data_never_silences_the_live_stream(api: Api) -> None:
    stream = await EventStream.open(api.session, api.url, api.admin_token)
    try:
        st = await api.station("DEEP-EV")
        event = {"seqNo": 0, "generatedAt": "2024-06-01T10:00:00Z", "eventData": [{
            "eventId": 1, "timestamp": "2024-06-01T10:00:00Z", "trigger": "Alerting", "actualValue": "1",
            "eventNotificationType": "HardWiredNotification", "component": {"name": "Cpu"},
            "variable": {"name": "Temperature"}}]}
        deep = {**event, "eventData": [{**event["eventData"][0], "customData": nested(250)}]}
        reply = await st.call("NotifyEvent", deep)
        assert is_callerror(reply, reply[1], "FormatViolation"), reply
        shallow = {**event, "eventData": [{**event["eventData"][0], "customData": nested(MAX_DEPTH - 4)}]}
        assert (await st.call("NotifyEvent", shallow))[0] == 3
        await stream.wait_for(lambda e: e["kind"] == "station.event" and e["station_id"] == "DEEP-EV")
        await api.station("AFTER-DEEP")  # the stream still delivers what happens next
        await stream.wait_for(lambda e: e["station_id"] == "AFTER-DEEP")
    finally:
        await stream.close()


# 3. Schema-valid input answered with InternalError ---------------------------------------------------
DEEP_CASES = {
    "Heartbeat": lambda d: {"customData": d},
    "StatusNotification": lambda d: {"timestamp": "2024-06-01T10:00:00Z", "connectorStatus": "Available",
                                     "evseId": 1, "connectorId": 1, "customData": d},
    "TransactionEvent": lambda d: started("TX-DEEP", "2024-06-01T10:00:00Z", customData=d),
    "DataTransfer": lambda d: {"vendorId": "x", "data": d},
}


@pytest.mark.parametrize("action", sorted(DEEP_CASES))
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300])
async def test_deep_json_in_any_action_is_refused_with_its_id_never_internal_error(api: Api, action: str,
                                                                                   depth: int) -> None:
    st = await api.station("DEEP")
    reply = await st.call(action, DEEP_CASES[action](nested(depth)))
    assert is_callerror(reply, reply[1], "FormatViolation"), reply
    assert await transactions(api) == []
    assert (await st.result("Heartbeat", {}))["currentTime"]


@pytest.mark.parametrize("action, payload, field", [
    ("StatusNotification", {"timestamp": "2024-06-01T10:00:00Z", "connectorStatus": "Available", "evseId": 1,
                            "connectorId": 2**63}, "connectorId"),
    ("StatusNotification", {"timestamp": "2024-06-01T10:00:00Z", "connectorStatus": "Available", "evseId": 2**64,
                            "connectorId": 1}, "evseId"),
    ("TransactionEvent", started("TX-BIG", "2024-06-01T10:00:00Z", seqNo=2**63), "seqNo"),
    ("TransactionEvent", started("TX-BIG", "2024-06-01T10:00:00Z", evse={"id": 2**63, "connectorId": 1}), "evse.id"),
    ("TransactionEvent", started("TX-BIG", "2024-06-01T10:00:00Z", seqNo=10**30), "seqNo"),
    ("MeterValues", {"evseId": 2**63, "meterValue": [{"timestamp": "2024-06-01T10:00:00Z",
                                                      "sampledValue": [{"value": 1.0}]}]}, "evseId"),
])
async def test_integers_beyond_int64_are_refused_identically_on_both_backends(api: Api, action: str,
                                                                              payload: dict[str, Any],
                                                                              field: str) -> None:
    st = await api.station("BIG-INT")
    reply = await st.call(action, payload)
    assert reply[0] == 4 and reply[2] == "PropertyConstraintViolation" and reply[4]["field"] == field, reply
    assert await transactions(api) == []
    status, detail = await api.get("/api/stations/BIG-INT")
    assert status == 200 and detail["evses"] == [], detail


async def test_integers_at_the_int64_limit_and_integral_floats_are_stored(api: Api) -> None:
    st = await api.station("EDGE-INT")
    assert (await st.call("TransactionEvent", started("TX-MAX", "2024-06-01T10:00:00Z", seqNo=INT64_MAX)))[0] == 3
    raw = json.dumps([2, "float-seq", "TransactionEvent", started("TX-FLOAT", "2024-06-01T10:00:00Z")])
    reply = await st.send_raw(raw.replace('"seqNo": 0', '"seqNo": 1.0'))
    assert reply[:2] == [3, "float-seq"], reply
    assert sorted(t["transaction_id"] for t in await transactions(api)) == ["TX-FLOAT", "TX-MAX"]
    for tx in ("TX-MAX", "TX-FLOAT"):
        status, detail = await api.get(f"/api/transactions/EDGE-INT/{tx}")
        assert status == 200, detail
    _, detail = await api.get("/api/transactions/EDGE-INT/TX-MAX")
    assert detail["events"][0]["seqNo"] == INT64_MAX
    # free-form JSON keeps what the JSON parser read: integers up to 2^64 - 1 exactly
    custom = {"vendorId": "x", "u64": 2**64 - 1, "i64": -(2**63)}
    reply = await st.call("MeterValues", {"evseId": 1, "customData": custom, "meterValue": [
        {"timestamp": "2024-06-01T10:00:00Z", "sampledValue": [{"value": 1.0}]}]})
    assert reply[0] == 3, reply


# 7. Frames and ids OCPP-J does not allow --------------------------------------------------------------
async def test_binary_frames_are_closed_with_1003_and_not_processed(edge: Api) -> None:
    st = await RawStation.connect(edge.running.ws_url, "BINARY")
    boot = json.dumps([2, "b1", "BootNotification", {"reason": "PowerUp", "chargingStation": {
        "vendorName": "V", "model": "M"}}]).encode()
    await st.ws.send(boot)  # bytes: a binary frame
    await asyncio.wait_for(st.ws.wait_closed(), 5)
    assert st.ws.close_code == 1003, st.ws.close_code
    await st.close()
    status, body = await edge.get("/api/stations/BINARY")
    assert status == 404, body  # never booted: the binary BootNotification was not processed


@pytest.mark.parametrize("segment", [b"CP%FF", b"CP%FE", b"CP%C3", b".", b"..", b"%2E%2E", b"%ZZ", b"CP%", b"CP%4",
                                     b"CP%2F1", b"CP%00", b"x" * 49])
async def test_bad_station_ids_are_refused_at_the_handshake_with_400_and_a_logged_reason(
        edge: Api, caplog: pytest.LogCaptureFixture, segment: bytes) -> None:
    port = ws_port(edge)
    with caplog.at_level(logging.WARNING):
        answer = await raw_http(port, upgrade_request(b"/ocpp/" + segment, port))
    assert answer.status == 400, answer
    assert any(r.levelno >= logging.WARNING and "refused" in r.getMessage() and r.name.startswith("csms")
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    status, body = await edge.get("/api/stations")
    assert status == 200 and body["stations"] == [], body


@pytest.mark.parametrize("request_bytes", [
    b"GET /ocpp/CP 1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",  # raw space
    b"HELLO\r\n\r\n",
    b"GET /ocpp/CP1 HTTP/1.1\r\nthis header has no colon\r\n\r\n",
    b"GET /ocpp/CP1 HTTP/9.9\r\nHost: x\r\n\r\n",
], ids=["raw-space", "not-http", "header-without-colon", "bad-version"])
async def test_malformed_http_gets_a_400(edge: Api, caplog: pytest.LogCaptureFixture, request_bytes: bytes) -> None:
    with caplog.at_level(logging.WARNING):
        answer = await raw_http(ws_port(edge), request_bytes)
    assert answer.status == 400, answer
    assert any("malformed" in r.getMessage() for r in caplog.records if r.name.startswith("csms"))


# 8. Small ones ---------------------------------------------------------------------------------------
async def test_the_1009_close_is_logged_as_1009(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with api_daemon(tmp_path, websocket={"max_frame_bytes": 4096}) as api:
        with caplog.at_level(logging.INFO):
            st = await api.station("TOO-BIG")
            await st.ws.send(json.dumps([2, "big", "DataTransfer", {"vendorId": "x", "data": "y" * 5000}]))
            await asyncio.wait_for(st.ws.wait_closed(), 5)
            assert st.ws.close_code == 1009

            def disconnect_lines() -> list[str]:
                return [r.getMessage() for r in caplog.records if "TOO-BIG" in r.getMessage()
                        and "disconnected" in r.getMessage()]
            [line] = await until(disconnect_lines, what="the disconnect log line")
        assert "1009" in line and "1006" not in line, line


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1023, 1025, 1200, 5000])
async def test_valid_json_nested_deep_is_answered_with_its_readable_id(edge: Api, depth: int) -> None:
    st = await edge.station("DEEP-FRAME")
    frame = '[2, "deep-id", "DataTransfer", {"vendorId": "x", "data": ' + "[" * depth + "]" * depth + "}]"
    reply = await st.send_raw(frame)
    assert reply[0] == 4 and reply[1] == "deep-id" and reply[2] == "FormatViolation", reply
    assert (await st.result("Heartbeat", {}))["currentTime"]


@pytest.mark.parametrize("token", ["AB\x01CD", "\x1b[31mRED", "DEL\x7f", "C1\x85"])
async def test_control_characters_in_id_tokens_are_refused(api: Api, token: str) -> None:
    st = await api.station("CTRL")
    reply = await st.call("Authorize", {"idToken": {"idToken": token, "type": "ISO14443"}})
    assert reply[0] == 4 and reply[2] == "PropertyConstraintViolation" and reply[4]["field"] == "idToken.idToken", reply
    event = started("TX-CTRL", "2024-06-01T10:00:00Z", idToken={"idToken": token, "type": "ISO14443"})
    reply = await st.call("TransactionEvent", event)
    assert reply[0] == 4 and reply[2] == "PropertyConstraintViolation" and reply[4]["field"] == "idToken.idToken", reply
    assert await transactions(api) == []
    status, tokens = await api.get("/api/id-tokens")
    assert status == 200 and all(t["id_token"] != token for t in tokens["id_tokens"]), tokens


async def test_operator_api_refuses_control_characters_in_id_tokens(edge: Api) -> None:
    status, body = await edge.post("/api/id-tokens", {"id_token": "BAD\x1b[0m", "type": "ISO14443"})
    assert status == 422, body


SECURITY_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"}


@pytest.mark.parametrize("path", ["/", "/static/dashboard.js", "/api/stations", "/health/live"])
async def test_dashboard_and_api_send_security_headers(edge: Api, path: str) -> None:
    async with edge.session.get(edge.url + path, headers={"Authorization": f"Bearer {edge.admin_token}"}) as r:
        assert r.status == 200
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, (name, dict(r.headers))
        csp = r.headers.get("Content-Security-Policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp



async def test_a_stream_skips_an_event_it_cannot_encode_with_a_logged_reason_and_goes_on(
        edge: Api, caplog: pytest.LogCaptureFixture) -> None:
    """Defence behind the edge's depth limit: whatever reaches the bus, a live stream never dies."""
    from dataclasses import dataclass
    from typing import ClassVar

    from csms.domain.events import Event

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Unencodable(Event):
        KIND: ClassVar[str] = "test.unencodable"
        payload: Any = None

    stream = await EventStream.open(edge.session, edge.url, edge.admin_token)
    try:
        with caplog.at_level(logging.ERROR):
            for _ in range(3):
                edge.daemon.bus.publish(Unencodable(station_id="ODD", payload=nested(300)))
            edge.daemon.bus.publish(Unencodable(station_id="ODD", payload={"big": 2**70}))
            await edge.station("AFTER-ODD")
            await stream.wait_for(lambda e: e["station_id"] == "AFTER-ODD")
        assert not [e for e in stream.events if e["kind"] == "test.unencodable"]
        skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
        assert len(skipped) == 1 and skipped[0].exc_info, [r.getMessage() for r in caplog.records]  # once per incident
    finally:
        await stream.close()


async def test_made_up_action_names_do_not_grow_the_metrics(edge: Api) -> None:
    st = await edge.station("NAMES")
    for i in range(30):
        reply = await st.call(f"MadeUpAction{i}", {})
        assert reply[0] == 4 and reply[2] == "NotImplemented", reply
    status, text = await edge.get("/metrics")
    assert status == 200
    assert "MadeUpAction" not in text and 'action="unknown"' in text

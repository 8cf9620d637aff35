"""The hardened edge: token buckets, failed-login limiter, per-station CALL cap, idle timeout."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from csms.metrics import Metrics
from csms.security.config import AuthFailureLimits, MessageRateLimits
from csms.security.credentials import register_station
from csms.security.ratelimit import FailureLimiter, MessageGate, TokenBucket
from tests.ocpp_client import RawStation
from tests.test_security_profiles import PASSWORD, basic, plain_daemon


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(capacity=2, rate=0.5, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0) and not bucket.take(0.0)
    assert bucket.wait(0.0) == pytest.approx(2.0)
    assert not bucket.take(1.9) and bucket.take(2.0 + 1.9)  # 1.9 s after the failed take: one token
    assert bucket.full(100.0)


def test_failure_limiter_window_and_known_good_address() -> None:
    clock = Clock()
    limiter = FailureLimiter(AuthFailureLimits(per_address=4, per_identity=2, window_s=60), clock)
    assert limiter.retry_after("10.0.0.1", "CS-1", registered=True) == 0
    limiter.failure("10.0.0.1", "CS-1", registered=True)
    limiter.failure("10.0.0.2", "CS-1", registered=True)
    assert limiter.retry_after("10.0.0.3", "CS-1", True) == pytest.approx(30.0)  # identity budget: 2 per 60 s
    assert limiter.retry_after("10.0.0.3", "CS-2", True) == 0
    limiter.success("10.0.0.9", "CS-1")
    assert limiter.retry_after("10.0.0.9", "CS-1", True) == 0  # the station's own address is not locked out
    clock.t += 30
    assert limiter.retry_after("10.0.0.3", "CS-1", True) == 0
    for i in range(4):
        limiter.failure("10.0.0.5", f"X-{i}", registered=False)
    assert limiter.retry_after("10.0.0.5", "X-9", False) == pytest.approx(15.0)  # address budget: 4 per 60 s
    assert limiter.retry_after("10.0.0.5", "CS-9", True) == 0  # ... spent only for ids without credentials


def test_guessing_from_a_known_good_address_is_limited_per_address() -> None:
    clock = Clock()
    limiter = FailureLimiter(AuthFailureLimits(per_address=4, per_identity=2, window_s=60), clock)
    limiter.success("10.0.0.9", "CS-1")
    limiter.failure("10.0.0.9", "CS-1", registered=True)
    limiter.failure("10.0.0.9", "CS-1", registered=True)
    assert limiter.retry_after("10.0.0.9", "CS-1", True) == pytest.approx(30.0)
    assert limiter.retry_after("10.0.0.9", "CS-2", True) == 0


class FakeWs:
    def __init__(self) -> None:
        self.sent: list[list[Any]] = []
        self.closed: tuple[int, str] | None = None

    async def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def test_message_gate_answers_excess_calls_and_closes_a_flooder() -> None:
    clock = Clock()
    gate = MessageGate(MessageRateLimits(per_second=2, burst=3, close_after=4), Metrics(), clock)
    ws = FakeWs()
    conn = SimpleNamespace(station_id="CS-1", ws=ws, send_text=ws.send, close=ws.close)
    assert [gate.admit("CS-1") for _ in range(4)] == [True, True, True, False]
    assert gate.admit("CS-2")  # buckets are per station
    await gate.refuse(conn, "m4")
    assert conn.ws.sent == [[4, "m4", "GenericError", "message rate limit exceeded (2/s); retry in 1 s", {}]]
    clock.t += 0.5
    assert gate.admit("CS-1")  # one token refilled, and the refusal streak ends
    for i in range(4):
        assert not gate.admit("CS-1")
        await gate.refuse(conn, f"x{i}")
    assert conn.ws.closed == (1008, "message rate limit exceeded")
    assert len(conn.ws.sent) == 1 + 3
    assert gate.last_call["CS-1"] == clock.t


async def test_idle_station_is_disconnected(tmp_path: Path) -> None:
    async with plain_daemon(tmp_path, idle_timeout_s=1) as d:
        await register_station(d.daemon.store, "CS-IDLE", 1, PASSWORD)
        st = await RawStation.connect(d.ws_url, "CS-IDLE", additional_headers=basic("CS-IDLE", PASSWORD))
        gate = d.daemon.security.message_gate
        assert d.daemon.message_gate is gate
        gate.admit("CS-OTHER")  # the connection's hook reports activity (idle sweeping is armed)
        await asyncio.wait_for(st.ws.wait_closed(), 5)
        assert st.ws.close_code == 1000 and st.ws.close_reason == "idle timeout"
        with pytest.raises(ConnectionClosed):
            await st.ws.send("[2,\"1\",\"Heartbeat\",{}]")


async def test_active_station_is_not_idle(tmp_path: Path) -> None:
    async with plain_daemon(tmp_path, idle_timeout_s=100) as d:
        await register_station(d.daemon.store, "CS-A", 1, PASSWORD)
        st = await RawStation.connect(d.ws_url, "CS-A", additional_headers=basic("CS-A", PASSWORD))
        await st.boot()
        security = d.daemon.security
        gate = security.message_gate
        gate.admit("CS-A")  # what the connection's hook does for each CALL
        assert security.idle_stations() == []
        gate.hooked = False  # no activity report from the hook at all: nobody is judged idle
        d.daemon.connections["CS-A"].connected_at = d.daemon.connections["CS-A"].connected_at.replace(year=2000)
        assert security.idle_stations() == []
        gate.admit("CS-A")
        gate.last_call["CS-A"] -= 101
        d.daemon.connections["CS-A"].connected_at = d.daemon.connections["CS-A"].connected_at.replace(year=2000)
        assert security.idle_stations() == ["CS-A"]
        await st.close()


def test_websockets_debug_logs_do_not_show_credentials() -> None:
    import logging

    from csms.security.component import _SecretsFilter

    header = logging.LogRecord("websockets.server", logging.DEBUG, __file__, 1, "< %s: %s",
                               ("Authorization", "Basic Q1MtMTpzZWNyZXQ="), None)
    frame = logging.LogRecord("websockets.server", logging.DEBUG, __file__, 1, "> %s",
                              ('TEXT [2,"1","SetVariables",{"setVariableData":[{"attributeValue":"s3cret-pass-word",'
                               '"variable":{"name":"BasicAuthPassword"}}]}]',), None)
    for record in (header, frame):
        assert _SecretsFilter().filter(record)
    assert "Q1MtMTpzZWNyZXQ=" not in header.getMessage()
    assert "s3cret-pass-word" not in frame.getMessage() and "BasicAuthPassword" in frame.getMessage()

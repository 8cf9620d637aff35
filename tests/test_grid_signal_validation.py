"""Out-of-range numbers and instants in limit signals and base loads are refused with a reason;
a bad (possibly retained) MQTT message is dropped and the session goes on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from csms.app import utc_now
from csms.bus import LocalBus
from csms.grid.config import GridConfig, parse_grid
from csms.grid.model.limits import SignalError, parse_base_load, parse_signal
from csms.grid.signals import Signals

NOW = datetime(2025, 1, 1, 12, tzinfo=timezone.utc)


# 2. Out-of-range numbers and instants are refused, never crash the session ---------------------
def _grid(prefix: str | None = None) -> GridConfig:
    section: dict[str, Any] = {"transformers": {"T1": {
        "capacity_kw": 400, "safe_limit_kw": 100,
        "base_load": {"kind": "mqtt", "fallback_kw": 40, "max_age_s": 60}}}}
    if prefix is not None:
        section["mqtt"] = {"topic_prefix": prefix}
    return parse_grid(section)


HUGE = int("1" * 400)  # valid JSON, no float can hold it


@pytest.mark.parametrize("payload, fragment", [
    ({"signal_id": "a", "limit_kw": HUGE}, "limit_kw is far too large"),
    ({"signal_id": "a", "intervals": [{"start": "2025-01-01T12:00:00Z", "limit_kw": HUGE}]},
     "intervals[0].limit_kw is far too large"),
    pytest.param(f'{{"signal_id": "a", "limit_kw": {HUGE}}}', "limit_kw is far too large", id="huge-in-json-text"),
    ({"signal_id": "a", "limit_kw": 5, "valid_from": "0001-01-01T00:30:00+01:00"}, "valid_from is out of range"),
    ({"signal_id": "a", "limit_kw": 5, "valid_until": "9999-12-31T23:59:00-01:00"}, "valid_until is out of range"),
    ({"signal_id": "a", "limit_kw": 5, "timestamp": "0001-01-01T00:00:00+00:01"}, "timestamp is out of range"),
    ({"signal_id": "a", "intervals": [{"start": "2025-01-01T12:00:00Z", "end": "9999-12-31T23:59:00-01:00",
                                       "limit_kw": 5}]}, "end is out of range once converted to UTC"),
])
def test_out_of_range_limit_signals_are_refused_with_a_reason(payload: Any, fragment: str) -> None:
    with pytest.raises(SignalError) as caught:
        parse_signal(payload, "T1", NOW, grid=_grid())
    assert fragment in caught.value.reason


@pytest.mark.parametrize("payload, fragment", [
    pytest.param(f'{{"kw": {HUGE}}}', "kw is far too large", id="huge-kw"),
    ('{"kw": 5, "timestamp": "0001-01-01T00:30:00+01:00"}', "timestamp is out of range"),
    ('{"kw": 5, "timestamp": "9999-12-31T23:59:00-01:00"}', "timestamp is out of range"),
])
def test_out_of_range_base_loads_are_refused_with_a_reason(payload: str, fragment: str) -> None:
    with pytest.raises(SignalError) as caught:
        parse_base_load(payload.encode(), NOW)
    assert fragment in caught.value.reason


async def test_api_submit_of_a_huge_limit_is_a_rejection_and_the_old_limit_holds() -> None:
    listener = Signals(_grid(), LocalBus(), CollectorRegistry(), utc_now)
    await listener.desk.submit("T1", {"signal_id": "ok", "limit_kw": 75})
    with pytest.raises(SignalError, match="far too large"):
        await listener.desk.submit("T1", {"signal_id": "huge", "limit_kw": HUGE})
    assert listener.book.limit_at("T1", datetime.now(timezone.utc))[0] == 75.0
    assert listener.desk.recent_rejections[-1]["signal_id"] == "huge"


@dataclass
class _Topic:
    value: str


@dataclass
class _Message:
    topic: _Topic
    payload: bytes
    retain: bool = False
    qos: int = 1
    mid: int = 0


class _Paho:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)


class _Client:
    """What ``_consume`` reads: a finite stream of messages, and paho's manual ack."""

    def __init__(self, messages: list[_Message]) -> None:
        self._messages = messages
        self._client = _Paho()

    @property
    async def messages(self) -> AsyncIterator[_Message]:  # type: ignore[override]
        for message in self._messages:
            yield message


async def test_poison_messages_are_dropped_and_the_session_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = Signals(_grid("p"), LocalBus(), CollectorRegistry(), utc_now)
    original = listener.desk.accept

    async def buggy(tid: str, payload: Any, *, live: bool, via: str) -> Any:
        if b"bug" in payload:
            raise RuntimeError("a bug in handling")
        return await original(tid, payload, live=live, via=via)

    monkeypatch.setattr(listener.desk, "accept", buggy)
    good = json.dumps({"signal_id": "later", "limit_kw": 60}).encode()
    stream = [
        _Message(_Topic("p/grid/T1/base-load"), f'{{"kw": {HUGE}}}'.encode(), retain=True, mid=1),
        _Message(_Topic("p/grid/T1/limit"), json.dumps({"signal_id": "x", "limit_kw": HUGE}).encode(), retain=True,
                 mid=2),
        _Message(_Topic("p/grid/T1/limit"), b'{"signal_id": "bug", "limit_kw": 1}', mid=3),
        _Message(_Topic("p/grid/T1/limit"), good, mid=4),
    ]
    client = _Client(stream)
    await asyncio.wait_for(listener.mqtt._consume(client), 5)  # type: ignore[arg-type]
    assert client._client.acked == [1, 2, 4]  # refused ones too (answered); the one that hit a bug is left to redeliver
    assert listener.book.limit_at("T1", datetime.now(timezone.utc)) == (60.0, "signal:dso:later")
    assert listener.book.measured_base_load("T1") is None
    errors = {s.labels["kind"]: s.value for m in listener.metrics.message_errors.collect() for s in m.samples
              if s.name.endswith("_total")}
    assert errors == {"limit": 1.0}



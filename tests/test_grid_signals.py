"""Limit signals: parsing, the limit book, the listener (in-process and over the real Mosquitto broker)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import aiomqtt
import pytest
from prometheus_client import CollectorRegistry

from csms.app import utc_now
from csms.bus import LocalBus
from csms.domain.events import Event
from csms.grid.config import GridConfig, parse_grid
from csms.grid.model.limits import LimitBook, SignalError, parse_signal
from csms.grid.signals import Signals
from simulators.grid_signals import DsoSignalPublisher, limit_payload, schedule_payload

NOW = datetime(2024, 6, 3, 12, 0, tzinfo=timezone.utc)  # a Monday; 14:00 in Amsterdam (CEST)
BROKER = ("127.0.0.1", 1883)


def grid(**t1: Any) -> GridConfig:
    spec = {"capacity_kw": 400, "safe_limit_kw": 100, "signal_timeout_s": 900,
            "contracts": [{"days": "daily", "start": "17:00", "end": "20:00", "limit_kw": 150, "name": "evening"}]}
    spec.update(t1)
    return parse_grid({"transformers": {"T1": spec, "SITE": {"capacity_kw": 50, "parent": "T1"}}})


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------------
# parse_signal
# ------------------------------------------------------------------------------------------------


def test_flat_limit_holds_from_now_until_valid_until() -> None:
    sig = parse_signal(json.dumps({"signal_id": "s1", "limit_kw": 120, "valid_until": iso(NOW + timedelta(hours=2)),
                                   "timestamp": iso(NOW - timedelta(seconds=5))}).encode(), "T1", NOW, grid=grid())
    assert sig.signal_id == "s1" and sig.source == "dso" and sig.transformer_id == "T1"
    assert sig.intervals == ((NOW, NOW + timedelta(hours=2), 120.0),)
    assert sig.issued_at == NOW - timedelta(seconds=5)
    assert sig.limit_at(NOW + timedelta(hours=1)) == 120.0 and sig.limit_at(NOW + timedelta(hours=2)) is None


def test_schedule_is_clipped_to_validity_and_past_intervals_dropped() -> None:
    h = timedelta(hours=1)
    sig = parse_signal({"signal_id": "s2", "source": "gopacs", "valid_until": iso(NOW + 3 * h), "intervals": [
        {"start": iso(NOW - 2 * h), "end": iso(NOW - h), "limit_kw": 10},
        {"start": iso(NOW - h), "end": iso(NOW + h), "limit_kw": 200},
        {"start": iso(NOW + h), "limit_kw": 90}]}, "T1", NOW, grid=grid())
    assert sig.source == "gopacs"
    assert sig.intervals == ((NOW - h, NOW + h, 200.0), (NOW + h, NOW + 3 * h, 90.0))


def test_offsets_other_than_utc_are_understood() -> None:
    sig = parse_signal({"signal_id": "s3", "limit_kw": 50, "valid_from": "2024-06-03T16:00:00+02:00"}, "T1", NOW)
    assert sig.intervals == ((NOW + timedelta(hours=2), None, 50.0),)


@pytest.mark.parametrize(("payload", "fragment"), [
    (b"{not json", "malformed JSON"),
    (b"\xff\xfe", "not UTF-8"),
    ("[1, 2]", "must be a JSON object"),
    ('{"signal_id": "x", "limit_kw": NaN}', "malformed JSON"),
    ({"signal_id": "x"}, "exactly one of limit_kw"),
    ({"signal_id": "x", "limit_kw": 5, "intervals": []}, "got both"),
    ({"limit_kw": 5}, "signal_id"),
    ({"signal_id": "x", "limit_kw": -1}, ">= 0 kW"),
    ({"signal_id": "x", "limit_kw": 400000}, "exceeds the rated capacity 400.0 kW"),
    ({"signal_id": "x", "limit_kw": "100"}, "must be a number"),
    ({"signal_id": "x", "limit_kw": True}, "must be a number"),
    ({"signal_id": "x", "limit_kW": 5}, "unknown field(s) limit_kW"),
    ({"signal_id": "x", "limit_kw": 5, "transformer": "T2"}, "names transformer 'T2'"),
    ({"signal_id": "x", "limit_kw": 5, "valid_until": iso(NOW - timedelta(seconds=1))}, "stale: validity ended"),
    ({"signal_id": "x", "limit_kw": 5, "timestamp": iso(NOW - timedelta(hours=1))}, "stale: timestamp"),
    ({"signal_id": "x", "limit_kw": 5, "timestamp": iso(NOW + timedelta(hours=1))}, "in the future"),
    ({"signal_id": "x", "limit_kw": 5, "valid_from": "2024-06-03T12:00:00"}, "needs a UTC offset"),
    ({"signal_id": "x", "limit_kw": 5, "valid_from": iso(NOW + timedelta(hours=2)),
      "valid_until": iso(NOW + timedelta(hours=1))}, "not after valid_from"),
    ({"signal_id": "x", "intervals": [{"start": iso(NOW + timedelta(hours=2)), "end": iso(NOW + timedelta(hours=3)),
                                       "limit_kw": 5},
                                      {"start": iso(NOW), "end": iso(NOW + timedelta(hours=1)), "limit_kw": 5}]},
     "intervals[1] starts before intervals[0]"),
    ({"signal_id": "x", "intervals": [{"start": iso(NOW), "end": iso(NOW + timedelta(hours=2)), "limit_kw": 5},
                                      {"start": iso(NOW + timedelta(hours=1)), "limit_kw": 5}]},
     "intervals[1] overlaps intervals[0]"),
    ({"signal_id": "x", "intervals": [{"start": iso(NOW), "limit_kw": 5},
                                      {"start": iso(NOW + timedelta(hours=1)), "limit_kw": 5}]},
     "intervals[0].end is missing"),
    ({"signal_id": "x", "intervals": [{"start": iso(NOW), "end": iso(NOW), "limit_kw": 5}]}, "before it starts"),
    ({"signal_id": "x", "intervals": [{"start": iso(NOW), "limit": 5}]}, "unknown field(s) limit"),
    ({"signal_id": "x", "intervals": [{"start": iso(NOW - timedelta(hours=2)), "end": iso(NOW - timedelta(hours=1)),
                                       "limit_kw": 5}]}, "every interval has already ended"),
])
def test_bad_signals_are_rejected_with_a_precise_reason(payload: Any, fragment: str) -> None:
    with pytest.raises(SignalError) as err:
        parse_signal(payload, "T1", NOW, grid=grid(), max_age_s=600)
    assert fragment in err.value.reason


def test_unknown_transformer_is_rejected_only_with_the_grid_known() -> None:
    with pytest.raises(SignalError, match="unknown transformer 'T9'"):
        parse_signal({"signal_id": "x", "limit_kw": 5}, "T9", NOW, grid=grid())
    assert parse_signal({"signal_id": "x", "limit_kw": 5}, "T9", NOW).transformer_id == "T9"


def test_rejection_carries_the_signal_id_when_there_is_one() -> None:
    with pytest.raises(SignalError) as err:
        parse_signal({"signal_id": "abc", "limit_kw": -3}, "T1", NOW)
    assert err.value.signal_id == "abc"


# ------------------------------------------------------------------------------------------------
# LimitBook
# ------------------------------------------------------------------------------------------------


def _signal(sid: str, kw: float, *, source: str = "dso", start: datetime = NOW, end: datetime | None = None,
            timestamp: datetime | None = None) -> Any:
    body: dict[str, Any] = {"signal_id": sid, "source": source, "intervals": [
        {"start": iso(start), **({"end": iso(end)} if end else {}), "limit_kw": kw}]}
    if timestamp:
        body["timestamp"] = iso(timestamp)
    return parse_signal(body, "T1", NOW, grid=grid())


def test_strictest_wins_capacity_contract_signal_safe_mode() -> None:
    book = LimitBook(grid())
    h = timedelta(hours=1)
    assert book.limit_at("T1", NOW) == (400.0, "capacity")
    evening = NOW + 3 * h  # 17:00 Amsterdam
    assert book.limit_at("T1", evening) == (150.0, "contract:evening")
    assert book.limit_at("T1", evening - timedelta(seconds=1)) == (400.0, "capacity")
    assert book.limit_at("T1", NOW + 6 * h) == (400.0, "capacity")  # 20:00 ends the window
    book.apply(_signal("a", 250, end=NOW + 4 * h))
    assert book.limit_at("T1", NOW) == (250.0, "signal:dso:a")
    assert book.limit_at("T1", evening) == (150.0, "contract:evening")  # contract still stricter
    book.apply(_signal("b", 80, source="gopacs", start=NOW + 3.5 * h, end=NOW + 5 * h))
    assert book.limit_at("T1", NOW + 3.5 * h) == (80.0, "signal:gopacs:b")
    assert book.set_safe_mode("T1", True, "test")
    assert book.limit_at("T1", NOW) == (100.0, "safe_mode")
    assert book.limit_at("T1", NOW + 3.5 * h) == (80.0, "signal:gopacs:b")  # stricter than the safe limit
    book.set_safe_mode("T1", False, "")
    assert not book.in_safe_mode("T1") and book.limit_at("T1", NOW) == (250.0, "signal:dso:a")
    assert book.limit_at("SITE", NOW) == (50.0, "capacity")  # a parent's signal is not a child's own limit


def test_schedule_takes_the_minimum_over_each_slot() -> None:
    book = LimitBook(grid())
    book.apply(_signal("a", 200, start=NOW + timedelta(minutes=20), end=NOW + timedelta(minutes=25)))
    slots = book.schedule("T1", NOW, 4, 900)
    assert slots == [(400.0, "capacity"), (200.0, "signal:dso:a"), (400.0, "capacity"), (400.0, "capacity")]
    evening = book.schedule("T1", NOW + timedelta(hours=2, minutes=50), 2, 900)
    assert [kw for kw, _ in evening] == [150.0, 150.0]  # the window starts inside the first slot


def test_same_source_replaces_duplicates_are_idempotent() -> None:
    book = LimitBook(grid())
    first = _signal("a", 200)
    assert book.apply(first) is True
    assert book.apply(_signal("a", 200)) is False  # same id, same content: nothing happens
    with pytest.raises(SignalError, match="already applied with different content"):
        book.apply(_signal("a", 150))
    book.apply(_signal("b", 300))  # same source: replaces "a" although it is looser
    assert book.limit_at("T1", NOW) == (300.0, "signal:dso:b")
    assert [s.signal_id for s in book.signals("T1")] == ["b"]


def test_older_signal_of_the_same_source_is_refused() -> None:
    book = LimitBook(grid())
    book.apply(_signal("new", 200, timestamp=NOW - timedelta(seconds=10)))
    with pytest.raises(SignalError, match="superseded"):
        book.apply(_signal("old", 300, timestamp=NOW - timedelta(seconds=60)))
    assert book.limit_at("T1", NOW) == (200.0, "signal:dso:new")


def test_overnight_contract_and_dst() -> None:
    g = grid(contracts=[{"days": ["sat"], "start": "22:00", "end": "06:00", "limit_kw": 60}])
    book = LimitBook(g)
    # 2024-03-30 is a Saturday; DST starts on Sunday 31 March at 02:00 (CET -> CEST).
    assert book.limit_at("T1", datetime(2024, 3, 30, 20, 59, tzinfo=timezone.utc))[0] == 400.0  # 21:59 CET
    assert book.limit_at("T1", datetime(2024, 3, 30, 21, 0, tzinfo=timezone.utc))[0] == 60.0  # 22:00 CET
    assert book.limit_at("T1", datetime(2024, 3, 31, 3, 59, tzinfo=timezone.utc))[0] == 60.0  # 05:59 CEST
    assert book.limit_at("T1", datetime(2024, 3, 31, 4, 0, tzinfo=timezone.utc))[0] == 400.0  # 06:00 CEST
    assert book.limit_at("T1", datetime(2024, 3, 31, 21, 30, tzinfo=timezone.utc))[0] == 400.0  # Sunday night


def test_base_load_profile_and_measured_with_fallback() -> None:
    g = parse_grid({"transformers": {
        "P": {"capacity_kw": 400, "base_load": {"kind": "profile", "profile": [["07:00", 150], ["17:00", 250]]}},
        "M": {"capacity_kw": 400, "base_load": {"kind": "mqtt", "fallback_kw": 300, "max_age_s": 60}},
        "Z": {"capacity_kw": 400}}})
    book = LimitBook(g)
    assert book.base_load_kw("P", NOW) == 150.0  # 14:00 local
    assert book.base_load_kw("P", NOW + timedelta(hours=3)) == 250.0  # 17:00
    assert book.base_load_kw("P", NOW - timedelta(hours=8)) == 250.0  # 06:00 wraps to yesterday's 17:00 value
    assert book.base_load_kw("Z", NOW) == 0.0
    assert book.base_load_kw("M", NOW) == 300.0  # nothing measured yet
    book.set_measured_base_load("M", 123.5, NOW)
    assert book.base_load_kw("M", NOW + timedelta(seconds=30)) == 123.5
    assert book.base_load_kw("M", NOW + timedelta(seconds=61)) == 300.0  # stale
    with pytest.raises(ValueError):
        book.set_measured_base_load("M", float("nan"), NOW)


def test_silence_needs_a_timeout() -> None:
    book = LimitBook(grid())
    start = NOW
    assert not book.is_silent("T1", NOW + timedelta(seconds=900), since=start)
    assert book.is_silent("T1", NOW + timedelta(seconds=901), since=start)
    book.mark_heard("T1", NOW + timedelta(seconds=800))
    assert not book.is_silent("T1", NOW + timedelta(seconds=1600), since=start)
    assert not book.is_silent("SITE", NOW + timedelta(days=9))  # no signal_timeout_s: never silent


# ------------------------------------------------------------------------------------------------
# The listener
# ------------------------------------------------------------------------------------------------


async def next_event(queue: asyncio.Queue[Event], match: Callable[[Event], bool], timeout: float = 5.0) -> Event:
    async def find() -> Event:
        while True:
            ev = await queue.get()
            if match(ev):
                return ev
    return await asyncio.wait_for(find(), timeout)


def live_grid(prefix: str | None, *, timeout_s: float | None = 30, port: int = BROKER[1],
              grace_s: float = 5.0) -> GridConfig:
    spec: dict[str, Any] = {"capacity_kw": 400, "safe_limit_kw": 100,
                            "base_load": {"kind": "mqtt", "fallback_kw": 40, "max_age_s": 60}}
    if timeout_s is not None:
        spec["signal_timeout_s"] = timeout_s
    section: dict[str, Any] = {"transformers": {"T1": spec}}
    if prefix is not None:
        section["mqtt"] = {"topic_prefix": prefix, "port": port, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2,
                           "broker_grace_s": grace_s}
    return parse_grid(section)


async def test_submit_without_broker_applies_and_announces() -> None:
    bus = LocalBus()
    queue, _ = bus.queue("grid.")
    listener = Signals(live_grid(None), bus, CollectorRegistry(), utc_now)
    await listener.start()
    try:
        sig = await listener.desk.submit("T1", {"signal_id": "api-1", "source": "operator", "limit_kw": 75})
        assert sig.signal_id == "api-1"
        ev = await next_event(queue, lambda e: e.kind == "grid.limit" and e.signal_id == "api-1")
        assert ev.data() == {"transformer_id": "T1", "limit_kw": 75.0, "source": "signal:operator:api-1",
                           "signal_id": "api-1"}
        assert listener.book.limit_at("T1", datetime.now(timezone.utc))[0] == 75.0
        assert listener.status.snapshot("T1")["limit_kw"] == 75.0
        with pytest.raises(SignalError, match="exceeds the rated capacity"):
            await listener.desk.submit("T1", {"signal_id": "api-2", "limit_kw": 401})
        ev = await next_event(queue, lambda e: e.kind == "grid.signal_rejected")
        assert ev.signal_id == "api-2" and "rated capacity" in ev.reason
        assert listener.book.limit_at("T1", datetime.now(timezone.utc))[0] == 75.0  # the last good limit holds
        assert listener.desk.recent_rejections[-1]["signal_id"] == "api-2"
        with pytest.raises(SignalError, match="unknown transformer"):
            await listener.desk.submit("T9", {"signal_id": "api-3", "limit_kw": 1})
        outcome = {s.labels["outcome"]: s.value for m in listener.metrics.signals.collect() for s in m.samples
                   if s.name.endswith("_total") and s.labels["transformer"] == "T1"}
        assert outcome == {"accepted": 1.0, "rejected": 1.0}
    finally:
        await listener.stop()


async def test_silence_turns_safe_mode_on_and_a_signal_turns_it_off() -> None:
    bus = LocalBus()
    queue, _ = bus.queue("grid.")
    listener = Signals(live_grid(None, timeout_s=0.3), bus, CollectorRegistry(), utc_now)
    await listener.start()
    try:
        ev = await next_event(queue, lambda e: e.kind == "grid.safe_mode", timeout=3)
        assert ev.on is True and "no limit signal for more than 0.3 s" in ev.reason
        assert listener.book.in_safe_mode("T1")
        assert listener.book.limit_at("T1", datetime.now(timezone.utc)) == (100.0, "safe_mode")
        assert listener.status.snapshot("T1")["safe_mode"] is True
        assert listener.metrics.safe_mode.labels("T1")._value.get() == 1
        await listener.desk.submit("T1", {"signal_id": "wake", "limit_kw": 300})
        ev = await next_event(queue, lambda e: e.kind == "grid.safe_mode")
        assert ev.on is False
        assert listener.book.limit_at("T1", datetime.now(timezone.utc)) == (300.0, "signal:dso:wake")
        assert listener.status.snapshot("T1")["safe_mode"] is False
    finally:
        await listener.stop()


# ------------------------------------------------------------------------------------------------
# Over the real broker
# ------------------------------------------------------------------------------------------------


class Watcher:
    """Subscribes to everything under a prefix and lets a test await one matching message."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.seen: list[tuple[str, Any, bool]] = []
        self._new = asyncio.Condition()

    async def run(self) -> None:
        async for msg in self.client.messages:
            raw = msg.payload
            text = raw.decode() if isinstance(raw, (bytes, bytearray)) else str(raw)
            try:
                body: Any = json.loads(text)
            except ValueError:
                body = text
            async with self._new:
                self.seen.append((msg.topic.value, body, bool(msg.retain)))
                self._new.notify_all()

    def mark(self) -> int:
        """A position: `wait(..., since=mark)` then ignores everything seen before it."""
        return len(self.seen)

    async def wait(self, topic: str, match: Callable[[Any], bool] = lambda b: True, timeout: float = 5.0,
                   since: int = 0) -> Any:
        async def find() -> Any:
            async with self._new:
                while True:
                    for t, body, _ in self.seen[since:]:
                        if t == topic and match(body):
                            return body
                    await self._new.wait()
        return await asyncio.wait_for(find(), timeout)


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def watcher(prefix: str) -> AsyncIterator[Watcher]:
    async with aiomqtt.Client(*BROKER, identifier=f"watch-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        w = Watcher(client)
        task = asyncio.create_task(w.run())
        try:
            yield w
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            # Leave no retained messages behind on the shared broker.
            for topic in {t for t, _, retained in w.seen if t.endswith(("/status", "/availability"))}:
                await client.publish(topic, b"", qos=1, retain=True)


@pytest.fixture
async def listener(prefix: str) -> AsyncIterator[tuple[Signals, asyncio.Queue[Event]]]:
    bus = LocalBus()
    queue, _ = bus.queue("grid.")
    lst = Signals(live_grid(prefix, timeout_s=30), bus, CollectorRegistry(), utc_now)
    await lst.start()
    assert await lst.mqtt.wait_connected(5), "is Mosquitto running on 127.0.0.1:1883?"
    try:
        yield lst, queue
    finally:
        await lst.stop()


@pytest.mark.mqtt
async def test_signal_over_mqtt_reaches_the_bus_and_the_status_topic(
        prefix: str, watcher: Watcher, listener: tuple[Signals, asyncio.Queue[Event]]) -> None:
    lst, queue = listener
    assert await watcher.wait(f"{prefix}/csms/availability", lambda b: b == "online")
    async with DsoSignalPublisher(*BROKER, prefix=prefix) as dso:
        sent = await dso.send_limit("T1", 180.0, valid_until=datetime.now(timezone.utc) + timedelta(hours=1))
    ev = await next_event(queue, lambda e: e.kind == "grid.limit" and e.signal_id == sent["signal_id"])
    assert ev.limit_kw == 180.0 and ev.source == f"signal:dso:{sent['signal_id']}"
    verdict = await watcher.wait(f"{prefix}/grid/T1/signal-status", lambda b: b["signal_id"] == sent["signal_id"])
    assert verdict["status"] == "accepted" and verdict["reason"] is None
    status = await watcher.wait(f"{prefix}/grid/T1/status", lambda b: b.get("limit_kw") == 180.0)
    assert status["limit_source"] == f"signal:dso:{sent['signal_id']}" and status["safe_mode"] is False
    assert status["capacity_kw"] == 400.0


@pytest.mark.mqtt
async def test_malformed_signal_is_answered_and_the_old_limit_holds(
        prefix: str, watcher: Watcher, listener: tuple[Signals, asyncio.Queue[Event]]) -> None:
    lst, queue = listener
    async with DsoSignalPublisher(*BROKER, prefix=prefix) as dso:
        good = await dso.send_limit("T1", 220.0)
        await next_event(queue, lambda e: e.kind == "grid.limit" and e.signal_id == good["signal_id"])
        await dso.send_raw("T1", b'{"signal_id": "bad-1", "limit_kw": ')
        await dso.send_raw("T1", json.dumps({"signal_id": "bad-2", "limit_kw": -40}))
        await dso.send("T1", good)  # a re-send: idempotent
    rejected = await watcher.wait(f"{prefix}/grid/T1/signal-status", lambda b: b["status"] == "rejected")
    assert rejected["signal_id"] is None and rejected["reason"].startswith("malformed JSON")
    second = await watcher.wait(f"{prefix}/grid/T1/signal-status", lambda b: b["signal_id"] == "bad-2")
    assert second["status"] == "rejected" and ">= 0 kW" in second["reason"]
    ev = await next_event(queue, lambda e: e.kind == "grid.signal_rejected" and e.signal_id == "bad-2")
    assert ev.transformer_id == "T1"
    dup = await watcher.wait(f"{prefix}/grid/T1/signal-status", lambda b: b["status"] == "duplicate")
    assert dup["signal_id"] == good["signal_id"]
    assert lst.book.limit_at("T1", datetime.now(timezone.utc)) == (220.0, f"signal:dso:{good['signal_id']}")


@pytest.mark.mqtt
async def test_quiet_source_means_safe_mode_until_the_next_signal(prefix: str, watcher: Watcher) -> None:
    bus = LocalBus()
    queue, _ = bus.queue("grid.")
    lst = Signals(live_grid(prefix, timeout_s=1.0), bus, CollectorRegistry(), utc_now)
    await lst.start()
    try:
        assert await lst.mqtt.wait_connected(5)
        ev = await next_event(queue, lambda e: e.kind == "grid.safe_mode" and e.on, timeout=5)
        assert "no limit signal" in ev.reason
        status = await watcher.wait(f"{prefix}/grid/T1/status", lambda b: b.get("safe_mode") is True)
        assert status["limit_kw"] == 100.0 and status["limit_source"] == "safe_mode"
        assert "no limit signal" in status["safe_mode_reason"]
        mark = watcher.mark()
        async with DsoSignalPublisher(*BROKER, prefix=prefix) as dso:
            await dso.send_limit("T1", 350.0)
        ev = await next_event(queue, lambda e: e.kind == "grid.safe_mode" and not e.on)
        status = await watcher.wait(f"{prefix}/grid/T1/status", lambda b: b.get("safe_mode") is False, since=mark)
        assert status["limit_kw"] == 350.0
    finally:
        await lst.stop()


@pytest.mark.mqtt
async def test_retained_signal_is_applied_but_is_no_sign_of_life(prefix: str, watcher: Watcher) -> None:
    async with DsoSignalPublisher(*BROKER, prefix=prefix) as dso:
        await dso.send_raw("T1", json.dumps(limit_payload(260.0, signal_id="kept")), retain=True)
        bus = LocalBus()
        queue, _ = bus.queue("grid.")
        lst = Signals(live_grid(prefix, timeout_s=1.0), bus, CollectorRegistry(), utc_now)
        await lst.start()
        try:
            await next_event(queue, lambda e: e.kind == "grid.limit" and e.signal_id == "kept")
            assert lst.book.last_heard("T1") is None
            ev = await next_event(queue, lambda e: e.kind == "grid.safe_mode", timeout=5)
            assert ev.on is True
            assert lst.book.limit_at("T1", datetime.now(timezone.utc)) == (100.0, "safe_mode")
        finally:
            await lst.stop()
            await dso.send_raw("T1", b"", retain=True)  # clear the retained signal


@pytest.mark.mqtt
async def test_schedule_and_base_load_over_mqtt(prefix: str, listener: tuple[Signals, asyncio.Queue[Event]]) -> None:
    lst, queue = listener
    now = datetime.now(timezone.utc)
    async with DsoSignalPublisher(*BROKER, prefix=prefix, source="gopacs") as dso:
        sent = await dso.send(
            "T1", schedule_payload([(now - timedelta(minutes=1), now + timedelta(hours=1), 140.0),
                                    (now + timedelta(hours=1), now + timedelta(hours=2), 90.0)], source="gopacs"))
        await next_event(queue, lambda e: e.kind == "grid.limit" and e.signal_id == sent["signal_id"])
        await dso.send_base_load("T1", 55.5)
        await dso.send_base_load("T9", 1.0)  # unknown group: ignored, not a crash
    assert [kw for kw, _ in lst.book.schedule("T1", now, 3, 3600)] == [140.0, 90.0, 400.0]
    assert lst.book.base_load_kw("T1", now) == 40.0  # nothing measured yet: the fallback

    async def measured() -> None:
        while lst.book.measured_base_load("T1") is None:
            await asyncio.sleep(0.02)
    await asyncio.wait_for(measured(), 5)
    assert lst.book.base_load_kw("T1", datetime.now(timezone.utc)) == 55.5
    assert lst.status.snapshot("T1")["base_load_kw"] == 55.5


@pytest.mark.mqtt
async def test_controller_state_is_merged_into_the_retained_status(
        prefix: str, watcher: Watcher, listener: tuple[Signals, asyncio.Queue[Event]]) -> None:
    lst, _ = listener
    lst.status.publish("T1", {"measured_kw": 211.5, "planned_kw": 198.0, "sessions_paused": 3,
                              "sessions_discharging": 1})
    status = await watcher.wait(f"{prefix}/grid/T1/status", lambda b: b.get("measured_kw") == 211.5)
    assert status["limit_kw"] == 400.0 and status["planned_kw"] == 198.0 and status["sessions_paused"] == 3
    assert status["transformer_id"] == "T1" and status["updated_at"].endswith("Z")


@pytest.mark.mqtt
async def test_unreachable_broker_means_safe_mode() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    bus = LocalBus()
    queue, _ = bus.queue("grid.")
    lst = Signals(live_grid("unreachable", timeout_s=3600, port=closed_port, grace_s=0.2), bus, CollectorRegistry(),
                  utc_now)
    await lst.start()
    try:
        ev = await next_event(queue, lambda e: e.kind == "grid.safe_mode", timeout=5)
        assert ev.on is True and "MQTT broker unreachable" in ev.reason
        assert not lst.mqtt.connected and lst.metrics.broker_connected._value.get() == 0
        assert lst.status.snapshot("T1")["safe_mode"] is True
        # The operator can still post a limit; the safe limit stays in force while it is stricter.
        await lst.desk.submit("T1", {"signal_id": "api", "limit_kw": 250})
        assert lst.book.limit_at("T1", datetime.now(timezone.utc)) == (100.0, "safe_mode")
    finally:
        await lst.stop()


async def test_shutdown_survives_a_swallowed_cancellation() -> None:
    """Python 3.11's wait_for (inside aiomqtt) can eat one cancel(); stopping must still finish."""
    from csms.tasks import cancel_and_wait

    started = asyncio.Event()

    async def stubborn() -> None:
        try:
            started.set()
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass  # what the race in wait_for amounts to
        await asyncio.sleep(10)

    task = asyncio.create_task(stubborn())
    await started.wait()
    await asyncio.wait_for(cancel_and_wait([task], round_s=0.05), 2)
    assert task.cancelled()


async def test_shutdown_retrieves_the_error_a_cancelled_task_ended_with() -> None:
    """A cancellation inside redis-py can end a task with an error instead: stopping retrieves it,
    so asyncio reports no "exception was never retrieved" once the task is gone."""
    import gc

    from csms.tasks import cancel_and_wait

    reported: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    started = asyncio.Event()

    async def turns_cancel_into_error() -> None:
        try:
            started.set()
            await asyncio.Event().wait()  # until cancelled
        except asyncio.CancelledError:
            raise ConnectionError("connection closed by the cancellation") from None

    task = asyncio.create_task(turns_cancel_into_error())
    await started.wait()
    await cancel_and_wait([task], round_s=0.05)
    assert task.done()
    del task
    gc.collect()
    loop.set_exception_handler(None)
    assert not reported, reported

"""The shared event stream packs many events per entry; every event and its typed grid part come back whole."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import orjson
import redis.asyncio as aioredis

from csms.bus import LocalBus
from csms.cluster import EVENTS_PER_ENTRY, Cluster, RemoteEvent, packed_fields, typed_event, unpacked
from csms.cluster_grid import GridFeed, encode_event
from csms.domain.events import Event, MeterValuesReceived, StationBooted, TransactionChanged
from csms.domain.meter import Reading
from csms.errorlog import ErrorLog

REDIS_URL = "redis://127.0.0.1:6379/0"
AT = datetime(2026, 12, 1, 11, 0, 0, 123456, tzinfo=timezone.utc)


def fleet_events(n: int) -> list[Event]:
    out: list[Event] = []
    for i in range(n):
        sid = f"S-{i}"
        out.append(TransactionChanged(station_id=sid, event_type="Updated", transaction_id=f"t{i}", evse_id=1,
                                      seq_no=i, reading=Reading(power_w=11040.0 - i, energy_wh=12.5 * i,
                                                                current_a={"L1": 16.0}, export_wh=None),
                                      vehicle_ids=("ev:1",), at=AT))
        if i % 3 == 0:
            out.append(StationBooted(station_id=sid, status="Accepted", vendor="V", model="ø-M", at=AT))
        if i % 5 == 0:
            out.append(MeterValuesReceived(station_id=sid, evse_id=1, reading=None, at=AT))
    return out


def same(remote: RemoteEvent, ev: Event) -> bool:
    expected = orjson.loads(orjson.dumps(ev.data(), option=orjson.OPT_NON_STR_KEYS, default=str))
    return (remote.kind, remote.station_id, remote.at, remote.payload, remote.node) == (
        ev.kind, ev.station_id, ev.at, expected, "node-a")


async def test_packed_entries_give_back_every_event_in_order_through_redis() -> None:
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    stream = f"test-events:{uuid.uuid4().hex}"
    events = fleet_events(120)
    try:
        for first in range(0, len(events), EVENTS_PER_ENTRY):
            await client.xadd(stream, packed_fields("node-a", events[first:first + EVENTS_PER_ENTRY]))  # type: ignore[arg-type]
        entries = await client.xrange(stream)
        assert len(entries) == -(-len(events) // EVENTS_PER_ENTRY)
        back = [item for _, fields in entries for item in unpacked(fields)]
        assert len(back) == len(events)
        for (remote, grid), ev in zip(back, events, strict=True):
            assert same(remote, ev)
            assert typed_event(grid) == ev  # the leader's typed copy: every field, the reading as a Reading
    finally:
        await client.delete(stream)
        await client.aclose()


def test_an_entry_of_one_event_from_a_node_not_yet_upgraded_is_read() -> None:
    ev = fleet_events(1)[0]
    fields = {"node": "node-a", "kind": ev.kind, "station_id": ev.station_id or "", "at": ev.at.isoformat(),
              "data": orjson.dumps(ev.data(), option=orjson.OPT_NON_STR_KEYS).decode(),
              "grid": encode_event(ev).decode()}
    (remote, grid), = unpacked(fields)
    assert same(remote, ev) and typed_event(grid) == ev


def test_a_malformed_grid_part_costs_only_its_own_typed_event() -> None:
    events = fleet_events(4)
    fields: dict[str, Any] = packed_fields("node-a", events)
    items = orjson.loads(fields["events"])
    items[1]["grid"] = {"type": "Nope", "fields": {}}
    fields["events"] = orjson.dumps(items).decode()
    cluster = Cluster(REDIS_URL, "test-events:", "node-b", lease_s=2.0, forward_timeout_s=1.0, spawner=None,  # type: ignore[arg-type]
                      errors=ErrorLog(), station_key=None)  # type: ignore[arg-type]
    bus = LocalBus()
    seen: list[Event] = []
    typed: list[Event] = []
    bus.subscribe(seen.append)
    cluster._bus = bus
    cluster.grid_feed = GridFeed(LocalBus())  # the leader's grid part: its own node's bus is another here
    cluster.grid_feed.subscribe(typed.append)
    cluster._republish(fields)
    cluster.grid_feed.release()  # the grid part listens (what came before was held for it)
    assert len(seen) == len(events)  # every event reaches this node's bus (API, SSE, dashboard)
    assert typed == [ev for i, ev in enumerate(events) if i != 1]  # the grid leader loses only the bad one

"""Store contract, input side (issue 16): what a writer accepts, every reader can read, on every backend.

Every backend applies one policy to odd input (docs/storage.md, "Odd input"). Events and samples
reach a store in the domain's terms (``TxEvent``, ``Sample``), checked once for every backend
when they are made from a payload; the tests go the same way (the 2.0.1 mapping, then the store).

- date-times the store indexes (a TransactionEvent's ``timestamp``, meter value timestamps) are
  stored in canonical form: ``T`` and ``Z`` upper case, ``+hh:mm`` offsets, a leap second
  (``:60``) as ``:59.999999``. A date-time that names no instant in years 1-9999 is refused
  with ``ValueError``, and nothing of the write is stored;
- integers the store indexes (seqNo, EVSE and connector ids) must fit a signed 64-bit integer,
  else ``ValueError``; integral floats (``3.0``) are stored as integers;
- a payload the JSON encoder cannot represent (nested deeper than it allows) is refused with
  ``ValueError``; free-form JSON otherwise round-trips as parsed (integers up to 2^64 - 1
  exactly, control characters included).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from csms.domain.meter import flatten
from csms.ocpp.v201.transactions import tx_event
from tests.edge_kit import BACKENDS, REDIS_URL, backend_overrides

T0 = datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc)
AT = datetime(2024, 6, 2, 8, 0, tzinfo=timezone.utc)  # when the daemon received something


def open_store(section: dict[str, Any]) -> Any:
    """The backend the ``store`` config section names (the one place that knows the store classes)."""
    if section["backend"] == "redis":
        from csms.store.redis_store import RedisStore
        return RedisStore(section["redis_url"], section["redis_prefix"])
    if section["backend"] == "postgres":
        from csms.store.postgres import PostgresStore
        return PostgresStore(section["postgres_dsn"], section["postgres_schema"])
    from csms.store.sqlite import SqliteStore
    return SqliteStore(section["sqlite_path"])


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with backend_overrides(request.param, tmp_path, REDIS_URL) as section:
        backend = open_store(section)
        await backend.open()
        try:
            yield backend
        finally:
            await backend.close()


def event(event_type: str, seq: Any, stamp: str, tx_id: str = "TX-1", **extra: Any) -> dict[str, Any]:
    return {"eventType": event_type, "timestamp": stamp, "triggerReason": "MeterValuePeriodic", "seqNo": seq,
            "transactionInfo": {"transactionId": tx_id, "chargingState": "Charging"},
            "evse": {"id": 1, "connectorId": 1},
            "meterValue": [{"timestamp": stamp, "sampledValue": [
                {"value": 1234.0, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}}]}],
            **extra}


async def record(store: Any, payload: dict[str, Any]) -> bool:
    """A TransactionEvent payload as the handler hands it to the store."""
    return bool(await store.record_transaction_event("CS-1", tx_event(payload), AT))


async def record_meter_values(store: Any, evse_id: Any, meter_values: list[dict[str, Any]]) -> None:
    await store.record_meter_values("CS-1", flatten(meter_values, evse_id, None), AT)


def nested(depth: int) -> dict[str, Any]:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = {"d": value}
    return {"vendorId": "deep", "d": value}


async def nothing_stored(store: Any, tx_id: str = "TX-1") -> None:
    assert await store.get_transaction("CS-1", tx_id) is None
    assert await store.list_transactions() == []
    assert await store.meter_samples("CS-1") == []
    assert await store.transaction_events("CS-1", tx_id) == []


# Date-times ----------------------------------------------------------------------------------------
ODD_STAMPS = [
    ("2024-06-01t10:00:00z", "2024-06-01T10:00:00Z", T0),
    ("2024-06-01T10:00:00z", "2024-06-01T10:00:00Z", T0),
    ("2024-06-01t10:00:00.250Z", "2024-06-01T10:00:00.250Z", T0 + timedelta(milliseconds=250)),
    ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.999999Z",
     datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)),
    ("2016-12-31t23:59:60.5z", "2016-12-31T23:59:59.999999Z",
     datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)),
    ("2024-06-01T12:00:00+0200", "2024-06-01T12:00:00+02:00", T0),
    ("2024-06-01T12:00:00+02:00", "2024-06-01T12:00:00+02:00", T0),
]


@pytest.mark.parametrize("stamp, canonical, instant", ODD_STAMPS, ids=[s for s, _, _ in ODD_STAMPS])
async def test_odd_date_times_are_stored_canonical_and_every_reader_works(store: Any, stamp: str, canonical: str,
                                                                          instant: datetime) -> None:
    assert await record(store, event("Started", 0, stamp))
    tx = await store.get_transaction("CS-1", "TX-1")
    assert tx is not None and tx.started_at == instant
    second = timedelta(seconds=1)
    assert [t.transaction_id for t in await store.list_transactions(since=instant - second,
                                                                    until=instant + second)] == ["TX-1"]
    assert await store.list_transactions(until=instant - second) == []
    [sample] = await store.meter_samples("CS-1", since=instant - second)
    assert sample["timestamp"] == canonical
    assert await store.meter_samples("CS-1", since=instant + second) == []
    assert [e["timestamp"] for e in await store.transaction_events("CS-1", "TX-1")] == [canonical]
    assert await record(store, event("Ended", 1, stamp))
    ended = await store.get_transaction("CS-1", "TX-1")
    assert ended is not None and ended.ended_at == instant and not ended.active
    assert [t.transaction_id for t in await store.list_transactions(since=instant)] == ["TX-1"]
    assert await store.list_transactions(since=instant + second) == []


@pytest.mark.parametrize("stamp", ["2024-06-01t10:00:00z", "2016-12-31T23:59:60Z", "2024-06-01T12:00:00+0200"])
async def test_odd_date_times_in_meter_values_are_stored_canonical(store: Any, stamp: str) -> None:
    await record_meter_values(store, 1, [{"timestamp": stamp, "sampledValue": [{"value": 5.0}]}])
    [sample] = await store.meter_samples("CS-1", since=datetime(2000, 1, 1, tzinfo=timezone.utc))
    expected = {s: c for s, c, _ in ODD_STAMPS}[stamp]
    assert sample["timestamp"] == expected


@pytest.mark.parametrize("stamp", ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00",
                                   "yesterday", "2024-02-30T10:00:00Z", ""])
async def test_date_times_naming_no_instant_are_refused_and_nothing_is_stored(store: Any, stamp: str) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        await record(store, event("Started", 0, stamp))
    await nothing_stored(store)
    with pytest.raises(ValueError, match="timestamp"):
        await record_meter_values(store, 1, [{"timestamp": stamp, "sampledValue": [{"value": 5.0}]}])
    assert await store.meter_samples("CS-1") == []


async def test_a_bad_meter_value_timestamp_refuses_the_whole_event(store: Any) -> None:
    bad = event("Started", 0, "2024-06-01T10:00:00Z")
    bad["meterValue"].append({"timestamp": "0000-01-01T00:00:00Z", "sampledValue": [{"value": 1.0}]})
    with pytest.raises(ValueError, match="timestamp"):
        await record(store, bad)
    await nothing_stored(store)


# Integers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change", [
    {"seqNo": 2**63}, {"seqNo": -(2**63) - 1}, {"seqNo": 1e30}, {"evse": {"id": 2**63, "connectorId": 1}},
    {"evse": {"id": 1, "connectorId": 2**63}},
], ids=["seqNo-2^63", "seqNo-below-int64", "seqNo-1e30", "evse-2^63", "connector-2^63"])
async def test_integers_beyond_int64_are_refused_and_nothing_is_stored(store: Any, change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        await record(store, {**event("Started", 0, "2024-06-01T10:00:00Z"), **change})
    await nothing_stored(store)


async def test_indexed_ids_beyond_int64_are_refused_outside_transactions_too(store: Any) -> None:
    with pytest.raises(ValueError):
        await record_meter_values(store, 2**63, [{"timestamp": "2024-06-01T10:00:00Z",
                                                 "sampledValue": [{"value": 5.0}]}])
    assert await store.meter_samples("CS-1") == []
    with pytest.raises(ValueError):
        await store.set_connector_status("CS-1", 2**63, 1, "Available", AT)
    with pytest.raises(ValueError):
        await store.set_connector_status("CS-1", 1, 2**64, "Available", AT)
    assert await store.list_connectors("CS-1") == []


async def test_int64_limits_and_integral_floats_are_stored_as_integers(store: Any) -> None:
    top = 2**63 - 1
    assert await record(store, event("Started", top, "2024-06-01T10:00:00Z"))
    tx = await store.get_transaction("CS-1", "TX-1")
    assert tx is not None and tx.last_seq_no == top
    assert await record(store, event("Started", 3.0, "2024-06-01T10:00:00Z", "TX-2"))
    tx2 = await store.get_transaction("CS-1", "TX-2")
    assert tx2 is not None and tx2.last_seq_no == 3 and type(tx2.last_seq_no) is int
    assert not await record(store, event("Started", 3, "2024-06-01T10:00:00Z", "TX-2"))
    await store.set_connector_status("CS-1", top, top, "Available", AT)
    [connector] = await store.list_connectors("CS-1")
    assert (connector["evse_id"], connector["connector_id"]) == (top, top)


# Free-form JSON --------------------------------------------------------------------------------------
async def test_payloads_too_deep_to_encode_are_refused_with_value_error(store: Any) -> None:
    with pytest.raises(ValueError):
        await store.record_station_message("CS-1", "DataTransfer", {"vendorId": "x", "data": nested(300)}, AT)
    assert await store.list_station_messages("CS-1") == []
    with pytest.raises(ValueError):
        await record(store, event("Started", 0, "2024-06-01T10:00:00Z", customData=nested(300)))
    await nothing_stored(store)
    with pytest.raises(ValueError):
        await store.record_ev_charging_needs("CS-1", 1, {"evseId": 1, "customData": nested(300)}, AT)
    assert await store.latest_ev_charging_needs("CS-1", 1) is None


async def test_free_form_json_round_trips_as_parsed(store: Any) -> None:
    payload = {"vendorId": "x", "data": {"u64": 2**64 - 1, "i64": -(2**63), "float": 1e30,
                                         "ctrl": "\x00\x1b[31m\x7f\x85", "deep": nested(32), "text": "zürich ✓"}}
    await store.record_station_message("CS-1", "DataTransfer", payload, AT)
    [row] = await store.list_station_messages("CS-1")
    assert row["payload"] == payload

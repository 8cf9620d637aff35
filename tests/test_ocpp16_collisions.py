"""OCPP 1.6 messages without seqNo against the real daemon, from the `ocpp` package's own v16
ChargePoint: two different MeterValues of one transaction with one timestamp whose derived numbers
collide are both stored; retransmitted MeterValues and StopTransaction are stored once, on every
store backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from ocpp.v16 import call

from csms.ocpp.v16.transactions import seq_for
from tests.daemon_fixture import RunningDaemon, running_daemon
from tests.ocpp16_station import Lib16Station, iso

NO_API = {"enabled": False}
BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]


def _wire(tx: int, at: str, value: str) -> dict[str, Any]:
    """The MeterValues as it arrives on the wire (what the number is derived from)."""
    return {"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": at, "sampledValue": [
        {"value": value, "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]}


def colliding_values(tx: int, at: str) -> tuple[str, str]:
    """Two different energy readings whose messages get the same derived number (1 in 512 pairs)."""
    seen: dict[int, str] = {}
    for wh in range(1000, 200000):
        value = str(wh)
        n = seq_for(at, "meter", _wire(tx, at, value))
        if n in seen:
            return seen[n], value
        seen[n] = value
    raise AssertionError("no collision found")


def _meter(tx: int, at: str, value: str) -> call.MeterValues:
    return call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[{"timestamp": at, "sampled_value": [
        {"value": value, "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}])


@asynccontextmanager
async def _daemon(tmp_path: Path, backend: str) -> AsyncIterator[RunningDaemon]:
    prefix = f"nb16c:{uuid.uuid4().hex}:"
    store = {"backend": "redis", "redis_prefix": prefix} if backend == "redis" else {}
    try:
        async with running_daemon(tmp_path, api=NO_API, store=store) as d:
            yield d
    finally:
        if backend == "redis":
            client = aioredis.from_url("redis://127.0.0.1:6379/0")
            try:
                keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
                if keys:
                    await client.delete(*keys)
            finally:
                await client.aclose()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
async def test_colliding_meter_values_are_both_kept_and_retransmissions_once(tmp_path: Path, backend: str) -> None:
    async with _daemon(tmp_path, backend) as d:
        store = d.daemon.store
        st = Lib16Station("CP16-COLL", connectors=2, meter_interval_s=3600)
        try:
            await st.connect(d.ws_url)
            tx = await st.start_transaction(1)
            other = await st.start_transaction(2)
            at = iso()
            low, high = colliding_values(tx, at)
            first = seq_for(at, "meter", _wire(tx, at, low))
            for value in (low, high, high, low):  # the last two: retransmissions
                await st.cp.call(_meter(tx, at, value))
            # another connector, the same instant: its own transaction
            await st.cp.call(call.MeterValues(connector_id=2, transaction_id=other, meter_value=[
                {"timestamp": at, "sampled_value": [{"value": low, "measurand": "Energy.Active.Import.Register",
                                                     "unit": "Wh"}]}]))

            events = [e for e in await store.transaction_events("CP16-COLL", str(tx))
                      if e["ocpp16"]["action"] == "MeterValues"]
            assert sorted(e["seqNo"] for e in events) == [first, first + 4]  # the second one moved on
            assert sorted(e["ocpp16"]["payload"]["meterValue"][0]["sampledValue"][0]["value"] for e in events) \
                == sorted([low, high])
            samples = await store.meter_samples("CP16-COLL", transaction_id=str(tx))
            periodic = sorted(s["value"] for s in samples if s.get("context") != "Transaction.Begin")
            assert periodic == sorted([float(low), float(high)])
            samples_2 = await store.meter_samples("CP16-COLL", transaction_id=str(other))
            assert [s["value"] for s in samples_2 if s.get("context") != "Transaction.Begin"] == [float(low)]

            stop = call.StopTransaction(meter_stop=int(high) + 10, timestamp=iso(), transaction_id=tx,
                                        reason="EVDisconnected", id_tag=st.id_tag)
            await st.cp.call(stop)
            await st.cp.call(stop)  # a retransmission after a lost answer
            events = await store.transaction_events("CP16-COLL", str(tx))
            assert [e["eventType"] for e in events].count("Ended") == 1
            ends = [s for s in await store.meter_samples("CP16-COLL", transaction_id=str(tx))
                    if s.get("context") == "Transaction.End"]
            assert len(ends) == 1
            record = await store.get_transaction("CP16-COLL", str(tx))
            assert record is not None and not record.active and record.energy_wh == float(int(high) + 10)
        finally:
            await st.stop()

"""Simulated stations against our own central system (the daemon) over 127.0.0.1.

What the issue's "done when" asks: a lower limit lowers the delivered power within one meter
interval, 0 suspends (SuspendedEVSE), a later positive limit resumes except for a no-resume EV,
GetCompositeSchedule matches the stacked profiles, bad profiles are rejected with the right
status, and offline queueing + replay work. Everything is observed from the CSMS side (store).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import pytest

from profiles.composite import InstalledProfile, composite_schedule
from simulators.clock import Clock
from simulators.ev import EV
from simulators.meter import iso
from simulators.models import EVModel, StationModel
from simulators.station import SimStation
from tests.waiting import until

METER_S = 0.5


@contextlib.asynccontextmanager
async def sim(url: str, station_id: str, **model_kw: Any) -> AsyncIterator[SimStation]:
    model = StationModel(**{"meter_interval_s": METER_S, "tick_s": 0.1, "message_attempt_interval_s": 0.2,
                            **model_kw})
    station = SimStation(station_id, url, model, clock=Clock(), call_timeout_s=3, reconnect_base_s=0.1,
                         reconnect_max_s=0.5)
    task = asyncio.create_task(station.run())
    try:
        await asyncio.wait_for(station.accepted.wait(), 10)
        yield station
    finally:
        station.stop()
        await asyncio.wait_for(task, 10)


def tx_profile(tx_id: str, limit: float, *, pid: int = 1, stack: int = 1, unit: str = "A") -> dict:
    return {"id": pid, "stackLevel": stack, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
            "transactionId": tx_id, "chargingSchedule": [
                {"id": 1, "chargingRateUnit": unit, "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}]}


async def active_tx(csms: Any, station_id: str) -> Any:
    txs = await csms.daemon.store.list_transactions(station_id=station_id, active=True)
    return txs[0] if txs else None


async def power_samples_after(csms: Any, station_id: str, since: datetime) -> list[float]:
    rows = await csms.daemon.store.meter_samples(station_id, since=since)
    return [r["value"] for r in rows if r["measurand"] == "Power.Active.Import"]


async def last_state(csms: Any, station_id: str) -> str | None:
    tx = await active_tx(csms, station_id)
    return tx.charging_state if tx else None


async def start_charging(csms: Any, station: SimStation, ev: EV) -> str:
    station.plug_in(1, ev)
    tx = await until(lambda: active_tx(csms, station.station_id))
    await until(lambda: _is(last_state(csms, station.station_id), "Charging"))
    return tx.transaction_id


async def _is(value: Any, expected: Any) -> bool:
    return (await value) == expected


def car(**kw: Any) -> EV:
    return EV(model=EVModel(**{"max_current_a": 32.0, **kw}), soc=0.2)


async def test_lower_limit_pause_and_resume_seen_by_our_csms(csms) -> None:
    async with sim(csms.ws_url, "SIM-1") as station:
        tx_id = await start_charging(csms, station, car())
        commands = csms.daemon.commands
        answer = await commands.set_charging_profile("SIM-1", 1, tx_profile(tx_id, 10))
        assert answer["status"] == "Accepted"
        sent = datetime.now(timezone.utc)
        started = time.monotonic()
        await until(lambda: _has_power(csms, "SIM-1", sent, 10 * 3 * 230), timeout=3)
        assert time.monotonic() - started <= METER_S + 0.5  # within one meter interval (+ store commit)
        assert station.power_w[1] == pytest.approx(6900)

        await commands.set_charging_profile("SIM-1", 1, tx_profile(tx_id, 0))
        await until(lambda: _is(last_state(csms, "SIM-1"), "SuspendedEVSE"))
        assert station.power_w[1] == 0
        await commands.set_charging_profile("SIM-1", 1, tx_profile(tx_id, 16))
        await until(lambda: _is(last_state(csms, "SIM-1"), "Charging"))
        assert station.power_w[1] == pytest.approx(16 * 3 * 230)


async def _has_power(csms: Any, station_id: str, since: datetime, watts: float) -> bool:
    return any(abs(v - watts) < 1 for v in await power_samples_after(csms, station_id, since))


async def test_no_resume_ev_stays_suspended_after_pause(csms) -> None:
    async with sim(csms.ws_url, "SIM-2") as station:
        tx_id = await start_charging(csms, station, car(resumes_after_pause=False))
        commands = csms.daemon.commands
        await commands.set_charging_profile("SIM-2", 1, tx_profile(tx_id, 0))
        await until(lambda: _is(last_state(csms, "SIM-2"), "SuspendedEVSE"))
        await commands.set_charging_profile("SIM-2", 1, tx_profile(tx_id, 16))
        await until(lambda: _is(last_state(csms, "SIM-2"), "SuspendedEV"))
        since = datetime.now(timezone.utc)
        await asyncio.sleep(METER_S * 2.5)  # two meter intervals: power must stay zero
        samples = await power_samples_after(csms, "SIM-2", since)
        assert samples and all(v == 0 for v in samples)


async def test_composite_schedule_matches_stacked_profiles(csms) -> None:
    async with sim(csms.ws_url, "SIM-3") as station:
        tx_id = await start_charging(csms, station, car())
        commands = csms.daemon.commands
        now = datetime.now(timezone.utc).replace(microsecond=0)
        station_max = {"id": 11, "stackLevel": 0, "chargingProfilePurpose": "ChargingStationMaxProfile",
                       "chargingProfileKind": "Absolute", "chargingSchedule": [
                           {"id": 1, "chargingRateUnit": "A", "startSchedule": iso(now),
                            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 20.0},
                                                       {"startPeriod": 1200, "limit": 12.0}]}]}
        tx = {"id": 12, "stackLevel": 2, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
              "transactionId": tx_id, "chargingSchedule": [
                  {"id": 1, "chargingRateUnit": "A", "chargingSchedulePeriod": [
                      {"startPeriod": 0, "limit": 25.0}, {"startPeriod": 600, "limit": 8.0},
                      {"startPeriod": 1800, "limit": 30.0}]}]}
        assert (await commands.set_charging_profile("SIM-3", 0, station_max))["status"] == "Accepted"
        assert (await commands.set_charging_profile("SIM-3", 1, tx))["status"] == "Accepted"
        answer = await commands.get_composite_schedule("SIM-3", 1, 3600, "A")
        assert answer["status"] == "Accepted"
        schedule = answer["schedule"]
        start = datetime.fromisoformat(schedule["scheduleStart"].replace("Z", "+00:00"))
        core_tx = station.core.evses[1].tx
        expected = composite_schedule(
            [InstalledProfile(0, station_max, now), InstalledProfile(1, tx, now)], evse_id=1, start=start,
            duration_s=3600, unit="A", max_limit=32.0, transaction_id=tx_id, transaction_start=core_tx.started_at)
        got = [(p["startPeriod"], p["limit"]) for p in schedule["chargingSchedulePeriod"]]
        assert got == [(round((p.start - start).total_seconds()), p.limit) for p in expected]
        assert [limit for _, limit in got] == [20.0, 8.0, 12.0]


@pytest.mark.parametrize("profile_change, model_kw, code, detail", [
    (lambda p: p["chargingSchedule"][0]["chargingSchedulePeriod"].__setitem__(0, {"startPeriod": 10, "limit": 8}),
     {}, "InvalidSchedule", "FirstStartPeriodNotZero"),
    (lambda p: p["chargingSchedule"][0].__setitem__("chargingRateUnit", "W"), {"rate_units": ("A",)},
     "UnsupportedRateUnit", "UnitNotAllowed"),
    (lambda p: p.__setitem__("stackLevel", 5), {"max_stack_level": 3}, "InvalidStackLevel", "StackLevelTooHigh"),
    (lambda p: p.__setitem__("transactionId", "not-the-active-one"), {}, "TxNotFound", "TransactionIdMismatch"),
    (lambda p: p["chargingSchedule"][0]["chargingSchedulePeriod"].__setitem__(0, {"startPeriod": 0, "limit": -8}),
     {}, "InvalidValue", "DischargeNotSupported"),
])
async def test_bad_profiles_rejected_with_reason(csms, profile_change, model_kw, code, detail) -> None:
    async with sim(csms.ws_url, "SIM-4", **model_kw) as station:
        tx_id = await start_charging(csms, station, car())
        profile = tx_profile(tx_id, 8)
        profile_change(profile)
        answer = await csms.daemon.commands.set_charging_profile("SIM-4", 1, profile)
        assert answer["status"] == "Rejected"
        assert answer["statusInfo"] == {"reasonCode": code, "additionalInfo": detail}
        assert station.power_w[1] == pytest.approx(32 * 3 * 230)  # nothing changed


async def test_offline_queue_replayed_to_our_csms(csms) -> None:
    async with sim(csms.ws_url, "SIM-5", authorize=False) as station:
        station.reconnect_base_s = station.reconnect_max_s = 1.5  # stay away long enough to queue
        station.drop_connection()
        await until(lambda: not station.accepted.is_set())
        station.plug_in(1, car())
        await asyncio.sleep(METER_S * 2)  # a couple of offline meter samples
        queued = [o.payload for o in station.core.outbox if o.action == "TransactionEvent"]
        assert len(queued) >= 3 and all(p["offline"] for p in queued)
        await asyncio.wait_for(station.accepted.wait(), 10)
        tx = await until(lambda: active_tx(csms, "SIM-5"))
        events = await until(lambda: _events_at_least(csms, "SIM-5", tx.transaction_id, len(queued)))
        assert [e["seqNo"] for e in events][:len(queued)] == list(range(len(queued)))
        assert all(e.get("offline") is True for e in events[:len(queued)])
        assert tx.first_seen_as == "Started"


async def _events_at_least(csms: Any, station_id: str, tx_id: str, n: int) -> list[dict] | None:
    events = await csms.daemon.store.transaction_events(station_id, tx_id)
    return events if len(events) >= n else None

"""Regression tests for reviewed grid bugs: each fails on the code before its fix."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

from csms.grid.pusher import Hysteresis, Pusher, Setpoints
from csms.grid.sessions import StationCaps

NOW = datetime(2025, 1, 1, 12, tzinfo=timezone.utc)
CAPS = StationCaps(periods_per_schedule=4)


def _plan(amps: float, station: str = "S") -> Setpoints:
    return Setpoints(station, 1, "tx", NOW, 900.0, (amps,) * 4, 3)


def _first_limit(profile: dict[str, Any]) -> float:
    return float(profile["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"])


# 1. A profile on the wire hides nothing from the hysteresis ------------------------------------
async def test_cut_within_hysteresis_of_installed_is_sent_while_a_higher_profile_is_in_flight() -> None:
    gate = asyncio.Event()
    wire: list[float] = []

    async def send(station_id: str, evse_id: int, profile: dict[str, Any]) -> dict[str, Any]:
        wire.append(_first_limit(profile))
        if _first_limit(profile) == 16.0:
            await gate.wait()
        return {"status": "Accepted"}

    pusher = Pusher(send, Hysteresis(min_interval_s=0), clock=lambda: NOW)
    todo, _ = pusher.due([(_plan(10.0), CAPS, "t")])
    await pusher.push(todo)
    todo, _ = pusher.due([(_plan(16.0), CAPS, "t")])
    slow = asyncio.create_task(pusher.push(todo))
    await asyncio.sleep(0)
    assert pusher.in_flight == {("S", 1): 1}

    cut, skipped = pusher.due([(_plan(10.5), CAPS, "t")], {"t": 0.0})
    assert [shaped.carried.current_a[0] for shaped in cut] == [10.5]
    assert skipped == []

    follow = asyncio.create_task(pusher.push(cut))
    gate.set()
    await asyncio.wait_for(asyncio.gather(slow, follow), 5)
    assert wire == [10.0, 16.0, 10.5]
    assert pusher.installed[("S", 1)].current_a[0] == 10.5
    assert pusher.in_flight == {}


async def test_hysteresis_applies_again_once_the_answer_landed() -> None:
    async def send(station_id: str, evse_id: int, profile: dict[str, Any]) -> dict[str, Any]:
        return {"status": "Accepted"}

    pusher = Pusher(send, Hysteresis(min_interval_s=0), clock=lambda: NOW)
    todo, _ = pusher.due([(_plan(10.0), CAPS, "t")])
    await pusher.push(todo)
    assert pusher.in_flight == {}
    again, skipped = pusher.due([(_plan(10.5), CAPS, "t")], {"t": 10.0})
    assert again == [] and [r.reason for r in skipped] == ["within hysteresis"]


async def test_cancelled_push_releases_profiles_that_never_went_out() -> None:
    started = asyncio.Event()

    async def send(station_id: str, evse_id: int, profile: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await asyncio.Event().wait()  # never answers
        return {"status": "Accepted"}

    pusher = Pusher(send, Hysteresis(min_interval_s=0), clock=lambda: NOW)
    first, _ = pusher.due([(_plan(10.0, "A"), CAPS, "t")])
    second, _ = pusher.due([(_plan(12.0, "A"), CAPS, "t")])
    task = asyncio.create_task(pusher.push(first + second))
    await asyncio.wait_for(started.wait(), 5)
    assert pusher.in_flight == {("A", 1): 2}
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert pusher.in_flight == {}

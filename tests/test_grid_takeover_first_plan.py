"""What a new grid leader's first plans cover, after a failover of thousands of stations.

Two things kept the last moved stations waiting in the 30,000-station failover of
`python -m bench cluster --only failover`:

- the other nodes' station events, held while the new leader reads its state back, were delivered
  after the controller had started, and the history's read-back at start gave the first plan time to
  begin without them: every station that reconnected to another node meanwhile (2,377 in one run)
  missed the first wave and waited for a plan beside it (5 s later, then its own wave);
- while a wave is in flight, a plan beside it ran every few seconds even when no session was left to
  plan (every steerable one held a schedule): each computed all 30,000 sessions to send nothing,
  taking about 1.5 s of the CPU the wave needed;
- a wave sends its increases once its reductions are answered; until then the plan beside it took
  their sessions (holding a read-back schedule) for newcomers and sent them a schedule too, which
  the increase overwrote later (6,394 needless pushes in one run).

The grid part against a fake daemon (commands answered in process, a hand clock), real planner.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

import csms.grid.control as control
from csms.cluster_grid import GridFeed
from csms.domain.events import StationBooted, StationConnected, TransactionChanged
from csms.domain.meter import Reading
from csms.grid.config import parse_grid
from csms.grid.effects.pusher import ShapedProfile, Wave
from csms.grid.effects.waves import Dispatch
from csms.grid.history import HistoryRecorder
from csms.grid.service import Grid
from profiles.hysteresis import Setpoints
from tests.test_grid_controller import FakeClock, FakeCommands, FakeDaemon, Rig, grid_section
from tests.waiting import until


class GatedCommands(FakeCommands):
    """TxProfiles to ``slow`` stations wait until the gate opens: a wave that stays in flight."""

    def __init__(self, slow: set[str], opened: bool = False) -> None:
        super().__init__()
        self.slow = slow
        self.gate = asyncio.Event()
        if opened:
            self.gate.set()

    async def set_charging_profile(self, station_id: str, evse_id: int, profile: dict[str, Any],
                                   timeout: float | None = None) -> dict[str, Any]:
        if station_id in self.slow and profile["chargingProfilePurpose"] == "TxProfile":
            await self.gate.wait()
        return await super().set_charging_profile(station_id, evse_id, profile, timeout)


class Refines:
    """Every refined plan the controller computes: what it held (None: a full plan) and which
    transactions the grid knew when it began."""

    def __init__(self, grid: Grid) -> None:
        self.holds: list[dict[str, float] | None] = []
        self.known: list[set[str]] = []
        refine = grid.planner.refine

        async def counted(now: Any, tids: list[str], hold: dict[str, float] | None = None) -> Any:
            self.holds.append(hold)
            self.known.append({s.transaction_id for s in grid.sessions})
            return await refine(now, tids, hold)
        grid.planner.refine = counted  # type: ignore[method-assign]


async def test_no_plan_is_computed_beside_a_wave_while_every_session_holds_a_schedule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "OVERLAP_AFTER_S", 0.2)
    commands = GatedCommands({"CS-SLOW"})
    rig = Rig(commands)
    await rig.ctl.start()
    try:
        for sid in ("CS-1", "CS-2"):
            await rig.station(sid)
        refines = Refines(rig.ctl).holds
        # A session whose TxProfile stays on the wire keeps a wave in flight.
        rig.connect("CS-SLOW")
        rig.transaction("CS-SLOW", "Started", "tx-slow", charging_state="Charging",
                        reading=Reading(power_w=11_000, energy_wh=1000.0))
        await until(lambda: bool(rig.ctl.controller._live) and any(h is None for h in refines), 5,
                    "a plan wave in flight to the slow station")
        full = len(refines)
        for _ in range(5):  # reasons to plan again keep coming, several overlap periods long
            rig.ctl.controller.request("meter values")
            await asyncio.sleep(0.15)
        assert len(refines) == full, f"plans computed beside the wave with nobody to plan: {refines[full:]}"
        # A newcomer is planned beside the wave (everyone else held), without waiting for it.
        rig.connect("CS-3")
        rig.transaction("CS-3", "Started", "tx-3", charging_state="Charging",
                        reading=Reading(power_w=11_000, energy_wh=1000.0))
        await until(lambda: bool(commands.tx_profiles("CS-3")), 5, "the newcomer's TxProfile beside the wave")
        beside = [h for h in refines[full:] if h is not None]
        assert beside and {"CS-1#1", "CS-2#1", "CS-SLOW#1"} <= set(beside[0]), beside
        assert rig.ctl.controller._live, "the slow wave is still in flight"
        commands.gate.set()
        await until(lambda: any(h is None for h in refines[full:]), 10, "the full plan once the wave ended")
    finally:
        commands.gate.set()
        await rig.ctl.stop()


async def test_events_held_while_the_state_is_read_back_are_in_the_first_plan(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A station that reconnected to another node during the takeover gets its TxProfile from the
    first plan, even when the grid's start takes a while after its controller is running."""
    slow_history = HistoryRecorder.start

    async def slow_start(self: HistoryRecorder) -> None:  # as the history's read-back of 30,000 sessions
        await asyncio.sleep(0.3)
        await slow_history(self)
    monkeypatch.setattr(HistoryRecorder, "start", slow_start)
    daemon = FakeDaemon()
    feed = GridFeed(daemon.bus)
    daemon.bus = feed  # type: ignore[assignment]
    grid = Grid(parse_grid(grid_section()), daemon, FakeClock())
    refines = Refines(grid)
    # Another node's events, held while the leader reads its state back.
    feed.remote(StationConnected(station_id="CS-MOVED"))
    feed.remote(StationBooted(station_id="CS-MOVED", status="Accepted", vendor="V", model="M"))
    feed.remote(TransactionChanged(station_id="CS-MOVED", event_type="Started", transaction_id="tx-m", evse_id=1,
                                   charging_state="Charging", reading=Reading(power_w=11_000, energy_wh=1000.0)))
    try:
        await grid.start(listening=feed.release)
        assert feed.released == 3
        await until(lambda: bool(daemon.commands.tx_profiles("CS-MOVED")), 5, "the moved station's TxProfile")
        assert refines.known, "no plan computed"
        assert refines.holds[0] is None and "tx-m" in refines.known[0], \
            f"the first plan began without the moved station's session: {refines.known}"
    finally:
        await grid.stop()


async def _a_reduction_and_an_increase(rig: Rig) -> tuple[list[ShapedProfile], Setpoints]:
    """CS-1 and CS-2 charging; profiles that halve CS-1 and raise CS-2, which runs a read-back
    schedule (an earlier leader's, not ours) at half its plan; returns them and that schedule."""
    for sid in ("CS-1", "CS-2"):
        await rig.station(sid)
    pusher = rig.ctl.pusher
    one, two = pusher.installed[("CS-1", 1)], pusher.installed[("CS-2", 1)]
    runs = dataclasses.replace(two, current_a=tuple(a / 2 for a in two.current_a))
    pusher.adopt(("CS-2", 1), runs, 0.0)
    lower = dataclasses.replace(one, current_a=tuple(a / 2 for a in one.current_a))
    caps = {sid: rig.ctl.sessions.station(sid).caps for sid in ("CS-1", "CS-2")}
    to_send, _ = pusher.due([(lower, caps["CS-1"], "T1"), (two, caps["CS-2"], "T1")], {"T1": 0.0}, force=True)
    return to_send, runs


async def test_a_waves_increases_waiting_for_its_reductions_are_held_beside_it() -> None:
    commands = GatedCommands({"CS-1"}, opened=True)
    rig = Rig(commands)
    await rig.ctl.start()
    try:
        to_send, _ = await _a_reduction_and_an_increase(rig)
        pusher, dispatcher, now = rig.ctl.pusher, rig.ctl.dispatcher, rig.clock()
        assert len(to_send) == 2
        commands.gate.clear()  # the reduction to CS-1 stays on the wire
        dispatch = Dispatch("plan", [], to_send, [], {})
        wave = asyncio.get_running_loop().create_task(dispatcher.run(dispatch, Wave()))
        await until(lambda: pusher.in_flight.get(("CS-1", 1)) is not None, 5, "the reduction on the wire")
        await asyncio.sleep(0.05)
        assert not commands.tx_profiles("CS-2")[1:], "the increase went out before the reduction was answered"
        held = dispatcher.holding(now)
        assert "CS-2#1" in held, f"the queued increase's session was taken for a newcomer: {held}"
        assert dispatcher.newcomers(held) == 0
        commands.gate.set()
        results = await asyncio.wait_for(wave, 5)
        assert [r.status for r in results] == ["Accepted", "Accepted"]
        assert not pusher.in_flight
    finally:
        commands.gate.set()
        await rig.ctl.stop()


async def test_queued_increases_are_released_when_their_wave_is_cancelled() -> None:
    commands = GatedCommands({"CS-1"}, opened=True)
    rig = Rig(commands)
    await rig.ctl.start()
    try:
        to_send, _ = await _a_reduction_and_an_increase(rig)
        pusher, dispatcher = rig.ctl.pusher, rig.ctl.dispatcher
        commands.gate.clear()
        wave = asyncio.get_running_loop().create_task(dispatcher.run(Dispatch("plan", [], to_send, [], {}), Wave()))
        await until(lambda: ("CS-2", 1) in pusher.in_flight and ("CS-1", 1) in pusher.in_flight, 5, "both on the wire")
        wave.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wave
        assert not pusher.in_flight, f"left on the wire: {pusher.in_flight}"
    finally:
        commands.gate.set()
        await rig.ctl.stop()


async def test_a_superseded_waves_queued_increases_are_off_the_wire_at_once() -> None:
    """A cut arriving while a wave's reductions are out: the increases that wave will never send no
    longer stand for what their sessions hold (the cut judges them on what they run)."""
    commands = GatedCommands({"CS-1"}, opened=True)
    rig = Rig(commands)
    await rig.ctl.start()
    try:
        to_send, runs = await _a_reduction_and_an_increase(rig)
        pusher, dispatcher = rig.ctl.pusher, rig.ctl.dispatcher
        commands.gate.clear()
        wave = Wave()
        task = asyncio.get_running_loop().create_task(dispatcher.run(Dispatch("plan", [], to_send, [], {}), wave))
        await until(lambda: ("CS-1", 1) in pusher.in_flight, 5, "the reduction on the wire")
        assert ("CS-2", 1) in pusher.in_flight
        wave.supersede()
        assert ("CS-2", 1) not in pusher.in_flight, "a superseded increase still counts as on the wire"
        assert pusher.expected(("CS-2", 1), 0.0) == runs
        commands.gate.set()
        results = await asyncio.wait_for(task, 5)
        assert {r.station_id: r.status for r in results} == {"CS-1": "Accepted", "CS-2": "superseded"}
        assert not pusher.in_flight and not commands.tx_profiles("CS-2")[1:]
    finally:
        commands.gate.set()
        await rig.ctl.stop()


async def test_a_read_back_schedule_a_full_plan_kept_is_held_beside_a_later_wave() -> None:
    rig = Rig()
    await rig.ctl.start()
    try:
        await rig.station("CS-1")
        pusher, key = rig.ctl.pusher, ("CS-1", 1)
        pusher.adopt(key, pusher.installed[key], 0.0)  # as read back after a takeover: not ours
        assert not pusher.ours(key)
        rig.ctl.controller.request("periodic")
        await rig.settle()
        assert len(rig.commands.tx_profiles("CS-1")) == 1, "the plan sent it again"
        assert pusher.ours(key), "kept by a full plan of ours, it is still taken for a newcomer"
    finally:
        await rig.ctl.stop()


async def test_a_stations_answer_does_not_stand_for_a_session_with_a_push_on_the_wire() -> None:
    rig = Rig()
    await rig.ctl.start()
    try:
        await rig.station("CS-1")
        pusher, key = rig.ctl.pusher, ("CS-1", 1)
        installed = pusher.installed[key]
        caps = rig.ctl.sessions.station("CS-1").caps
        to_send, _ = pusher.due([(dataclasses.replace(installed, current_a=(6.0,) * len(installed.current_a)),
                                  caps, "T1")], {"T1": 0.0}, force=True)
        pusher.queue(to_send)
        asked = pusher.accepted
        # The station's answer (made before that push) names the old schedule; it is not believed.
        rig.ctl.setup._adopt("CS-1", [(1, rig.commands.tx_profiles("CS-1")[-1][2])], asked)
        assert key not in pusher.installed and pusher.expected(key, 0.0) is not None
        pusher.unqueue(to_send)
        assert pusher.expected(key, 0.0) is None, "nothing is believed once the push did not land"
    finally:
        await rig.ctl.stop()

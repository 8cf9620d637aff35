"""Cars that do not resume after a pause are learnt per vehicle (and per station model), kept in the
store, and used in the next session: after a restart of the grid on the same store, vehicle X's
next session (on another station) is planned without a pause, while a car with no history is
paused instead. Also: the judgement rules, the vehicle keys a station's messages give, and a
stored record that is damaged.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from csms.domain import vehicles
from csms.domain.events import (
    EvChargingNeeds,
    LimitChanged,
    StationBooted,
    StationConnected,
    StationMonitoringEvent,
    TransactionChanged,
)
from csms.domain.meter import Reading
from csms.grid.config import parse_grid
from csms.grid.effects.learning import RESUME_MODEL, RESUME_VEHICLE
from csms.grid.model.limits import parse_signal
from csms.grid.model.resume import NO_RESUME, RESUMED, ResumeBook
from csms.grid.model.sessions import session_need
from csms.grid.service import Grid
from csms.store.base import Store
from csms.store.redis_store import RedisStore
from csms.store.sqlite import SqliteStore
from profiles.model import Plan, PlanInput, SessionNeed, SessionPlan
from profiles.pauses import keep_pauses
from tests.redis_kit import REDIS_URL, delete_prefix
from tests.test_grid_controller import T0, FakeClock, FakeDaemon, grid_section


class StoredRig:
    """The grid with a fake daemon and a hand clock, on a real store (so it can be restarted)."""

    def __init__(self, store: Store, clock: FakeClock) -> None:
        self.clock = clock
        self.daemon = FakeDaemon()
        self.ctl = Grid(parse_grid(grid_section()), self.daemon, clock, store=store)

    def publish(self, event: Any) -> None:
        self.daemon.bus.publish(event)

    def sessions(self) -> dict[tuple[str, int], Any]:
        return self.ctl.sessions.sessions

    async def settle(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
            await asyncio.gather(*self.daemon.tasks)
            await self.ctl.controller.settled(5)

    async def car(self, station_id: str, token: str | None, *, energy_wh: float = 30000,
                  hours: float = 8.0) -> str:
        self.publish(StationConnected(station_id=station_id))
        self.publish(StationBooted(station_id=station_id, status="Accepted", vendor="V", model="M"))
        self.publish(EvChargingNeeds(station_id=station_id, evse_id=1, needs={
            "requestedEnergyTransfer": "AC_three_phase", "departureTime": (self.clock() + timedelta(hours=hours))
            .isoformat(), "acChargingParameters": {"energyAmount": energy_wh, "evMinCurrent": 6,
                                                   "evMaxCurrent": 16, "evMaxVoltage": 400}}))
        tx = f"tx-{station_id}-{uuid.uuid4().hex[:6]}"
        payload = {} if token is None else {"idToken": {"idToken": token, "type": "ISO14443"}}
        self.publish(TransactionChanged(station_id=station_id, event_type="Started", transaction_id=tx, evse_id=1,
                                        charging_state="Charging", id_token=token,
                                        vehicle_ids=vehicles.from_transaction_event(payload),
                                        reading=Reading(power_w=11000.0, energy_wh=1000.0)))
        await self.settle()
        return tx

    def meter(self, station_id: str, kw: float, state: str) -> None:
        s = self.sessions()[(station_id, 1)]
        self.publish(TransactionChanged(station_id=station_id, event_type="Updated", transaction_id=s.transaction_id,
                                        evse_id=1, charging_state=state, reading=Reading(power_w=kw * 1000)))

    def limit(self, kw: float, signal_id: str) -> None:
        self.ctl.limit_book.apply(parse_signal({"signal_id": signal_id, "limit_kw": kw}, "T1", self.clock()))
        self.publish(LimitChanged(transformer_id="T1", limit_kw=kw, source=f"signal:dso:{signal_id}"))

    def last_tx_limits(self, station_id: str) -> list[float]:
        found = [p for s, _, p in self.daemon.commands.tx_profiles(station_id)]
        return [period["limit"] for period in found[-1]["chargingSchedule"][0]["chargingSchedulePeriod"]]


def _paused_then_resumed(limits: list[float]) -> bool:
    return any(a == 0 and any(b > 0 for b in limits[i + 1:]) for i, a in enumerate(limits))


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A factory of stores on the same data (a daemon restarted on the same file or key prefix)."""
    prefix = f"nbtest:resume:{uuid.uuid4().hex}:"

    def make() -> Store:
        return SqliteStore(str(tmp_path / "grid.db")) if request.param == "sqlite" else RedisStore(REDIS_URL, prefix)

    yield make
    if request.param == "redis":
        await delete_prefix(prefix)


async def _first_run_teaches_that_car_x_does_not_resume(rig: StoredRig) -> None:
    """As tests/test_grid_controller.py's never-pause test: four cars paused, CAR-X stays asleep."""
    await rig.car("CS-0", "CAR-X")
    for i in range(1, 4):
        await rig.car(f"CS-{i}", f"CAR-{i}")
    rig.limit(21.0, "pause-all")  # 1 kW above the 20 kW base load: every car pauses
    await rig.settle()
    for i in range(4):
        rig.meter(f"CS-{i}", 0.0, "SuspendedEVSE")
    rig.clock.advance(60)
    rig.limit(400.0, "recover")
    await rig.settle()
    for i in range(1, 4):
        rig.meter(f"CS-{i}", 11.0, "Charging")
    rig.meter("CS-0", 0.0, "SuspendedEV")  # this car stays asleep
    rig.clock.advance(130)
    rig.ctl.controller.request("tick")
    await rig.settle()
    assert rig.sessions()[("CS-0", 1)].can_pause is False
    for i in range(4):  # every car leaves
        s = rig.sessions()[(f"CS-{i}", 1)]
        rig.publish(TransactionChanged(station_id=f"CS-{i}", event_type="Ended", transaction_id=s.transaction_id,
                                       evse_id=1))
    await rig.settle()


async def test_a_car_that_did_not_resume_is_not_paused_in_its_next_session_after_a_restart(stores: Any) -> None:
    clock = FakeClock()
    store = stores()
    await store.open()
    try:
        first = StoredRig(store, clock)
        await first.ctl.start()
        try:
            await _first_run_teaches_that_car_x_does_not_resume(first)
        finally:
            await first.ctl.stop()
    finally:
        await store.close()

    clock.advance(24 * 3600)  # the next evening, a restarted daemon
    store = stores()
    await store.open()
    try:
        vehicle_docs = dict(await store.list_documents(f"grid:{RESUME_VEHICLE}"))
        assert vehicle_docs["token:CAR-X"]["last"] == NO_RESUME
        assert vehicle_docs["token:CAR-1"]["last"] == RESUMED
        model = dict(await store.list_documents(f"grid:{RESUME_MODEL}"))["V/M"]
        assert (model["no_resume"], model["resumed"]) == (1, 3)

        second = StoredRig(store, clock)
        await second.ctl.start()
        try:
            # CAR-X comes back on another station, with plenty of time (the car a planner would pause
            # first); CAR-Y, with no history, needs much more soon.
            await second.car("CS-5", "CAR-X", energy_wh=5000, hours=8)
            await second.car("CS-6", "CAR-Y", energy_wh=40000, hours=3)
            x = second.sessions()[("CS-5", 1)]
            assert x.can_pause is True  # nothing happened in this session yet ...
            second.limit(26.0, "squeeze")  # room for one car at 6 A above the base load
            await second.settle()
            book = second.ctl.sessions
            need_x = session_need(x, book.station("CS-5").caps, clock(), book.defaults)
            assert need_x.no_resume == "known" and not need_x.pausable  # ... but the car is known
            limits_x = second.last_tx_limits("CS-5")
            assert limits_x[0] >= 6 and not _paused_then_resumed(limits_x), limits_x  # 0 only once it has its need
            assert second.last_tx_limits("CS-6")[0] == 0  # the car with no history pauses instead
            view = next(s for s in second.ctl.snapshot()["transformers"]["T1"]["sessions"]
                        if s["station_id"] == "CS-5")
            assert view["no_resume"] == "known" and "token:CAR-X" in view["no_resume_reason"]
            assert view["identified_by"] == ["token"] and view["planned_off_from"] is None
            other = next(s for s in second.ctl.snapshot()["transformers"]["T1"]["sessions"]
                         if s["station_id"] == "CS-6")
            assert other["no_resume"] == "no"
        finally:
            await second.ctl.stop()
    finally:
        await store.close()


async def test_with_no_room_for_its_minimum_the_car_is_planned_off_and_said_so(stores: Any) -> None:
    clock = FakeClock()
    store = stores()
    await store.open()
    try:
        await store.put_document(f"grid:{RESUME_VEHICLE}", "token:CAR-X",
                                 {"no_resume": 1, "resumed": 0, "last": NO_RESUME, "at": T0.isoformat()})
        await store.put_document(f"grid:{RESUME_VEHICLE}", "token:BROKEN", {"no_resume": "many"})
        rig = StoredRig(store, clock)
        await rig.ctl.start()
        try:
            assert set(rig.ctl.learning.knowledge.vehicles) == {"token:CAR-X"}  # the damaged one is skipped
            await rig.car("CS-5", "CAR-X")
            rig.limit(20.5, "no-room")  # half a kW above the base load: no room for 6 A anywhere
            await rig.settle()
            assert rig.last_tx_limits("CS-5")[0] == 0
            view = rig.ctl.snapshot()["transformers"]["T1"]["sessions"][0]
            assert view["no_resume"] == "known" and view["planned_off_from"] is not None
            assert "off until departure" in (view["plan_reason"] or "")
        finally:
            await rig.ctl.stop()
    finally:
        await store.close()


def test_judgement_per_vehicle_and_per_station_model() -> None:
    book = ResumeBook()
    book.learn(NO_RESUME, ("token:A", "evccid:AA"), "V/M", "t1", "CS|1")
    assert book.judge(("evccid:AA",), None).level == "known"
    book.learn(RESUMED, ("token:A",), "V/M", "t2", "CS|2")
    assert book.judge(("token:A",), None).level == "suspected"  # failed once, resumed since
    assert book.judge(("evccid:AA",), None).level == "known"  # that key's last pause failed
    assert book.judge(("token:B",), "V/M").level == "no"  # the model: 1 of 2, below the minimum count
    book.learn(NO_RESUME, ("token:C",), "V/M", "t3", "CS|3")
    verdict = book.judge(("token:B",), "V/M")
    assert verdict.level == "suspected" and "V/M" in (verdict.reason or "")  # 2 of 3
    assert book.judge(("token:B",), "Other/X").level == "no"


def test_vehicle_keys_from_station_messages() -> None:
    assert vehicles.from_transaction_event({"idToken": {"idToken": "04A1", "type": "ISO14443"}}) == ("token:04A1",)
    assert vehicles.from_transaction_event({"idToken": {"idToken": "0A:1B", "type": "MacAddress"}}) == (
        "evccid:0A:1B", "token:0A:1B")
    assert vehicles.from_transaction_event({"idToken": {"idToken": "", "type": "NoAuthorization"}}) == ()
    assert vehicles.from_transaction_event({"customData": {"vendorId": "x", "vehicleId": "WVW1"},
                                            "transactionInfo": {"customData": {"evccid": "E1"}}}) == (
        "vehicle:WVW1", "evccid:E1")
    event = {"component": {"name": "ConnectedEV", "evse": {"id": 2}}, "variable": {"name": "VehicleId"},
             "actualValue": "WVW2", "eventId": 1, "timestamp": "2025-01-01T00:00:00Z", "trigger": "Delta",
             "eventNotificationType": "HardWiredNotification"}
    assert vehicles.from_notify_event(event) == (2, "vehicle:WVW2")
    assert vehicles.from_notify_event({**event, "actualValue": ""}) is None
    assert vehicles.from_notify_event({**event, "component": {"name": "ConnectedEV"}}) is None


async def test_a_vehicle_id_from_notify_event_joins_the_session(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "g.db"))
    await store.open()
    try:
        rig = StoredRig(store, FakeClock())
        await rig.ctl.start()
        try:
            await rig.car("CS-1", None)
            rig.publish(StationMonitoringEvent(station_id="CS-1", events=[
                {"component": {"name": "ConnectedEV", "evse": {"id": 1}}, "variable": {"name": "VehicleId"},
                 "actualValue": "WVW9"}, "not an event"]))
            assert rig.sessions()[("CS-1", 1)].vehicle_ids == ("vehicle:WVW9",)
        finally:
            await rig.ctl.stop()
    finally:
        await store.close()


def test_sticky_pauses_never_hand_a_car_that_does_not_resume_a_pause_to_resume_later() -> None:
    """profiles/pauses.py: a charging car planned to pause now and charge later, and an
    interchangeable paused car planned to charge now: swapping back would give the paused car
    "0 now, 16 A later". For a car learnt not to resume that is a pause it never wakes from."""
    def row(sid: str, amps: tuple[float, ...]) -> SessionPlan:
        return SessionPlan(sid, amps, tuple(a * 3 * 0.23 for a in amps), 0.0, 0.0, 0.0, None)

    for doubt, swapped in (("no", True), ("suspected", False), ("known", False)):
        charging = SessionNeed("CS-1#1", energy_needed_kwh=20.0, departure_s=10 * 3600.0)
        asleep = SessionNeed("CS-2#1", energy_needed_kwh=20.0, departure_s=10 * 3600.0, no_resume=doubt)
        rows = {"CS-1#1": row("CS-1#1", (0.0, 16.0)), "CS-2#1": row("CS-2#1", (16.0, 0.0))}
        inp = PlanInput(sessions=[charging, asleep], limit_kw=[100.0, 100.0], base_load_kw=[0.0, 0.0])
        plan = Plan(rows, (0.0, 0.0), (0.0, 0.0), ())
        result, kept = keep_pauses(inp, plan, {"CS-1#1": 16.0, "CS-2#1": 0.0})
        assert bool(kept) is swapped, doubt
        if not swapped:
            assert result.sessions["CS-2#1"].current_a == (16.0, 0.0)


async def test_a_token_two_running_sessions_share_names_no_car(tmp_path: Path) -> None:
    """A fleet card (or a station's free-vend token, or a simulator's default one) on two cars at
    once: a failure of one of them teaches nothing about the token, and that is kept."""
    clock = FakeClock()
    store = SqliteStore(str(tmp_path / "g.db"))
    await store.open()
    try:
        rig = StoredRig(store, clock)
        await rig.ctl.start()
        try:
            await rig.car("CS-0", "FLEET")
            await rig.car("CS-1", "FLEET")
            await rig.car("CS-2", "CAR-2")
            rig.limit(21.0, "pause-all")
            await rig.settle()
            for i in range(3):
                rig.meter(f"CS-{i}", 0.0, "SuspendedEVSE")
            rig.clock.advance(60)
            rig.limit(400.0, "recover")
            await rig.settle()
            rig.meter("CS-1", 11.0, "Charging")
            rig.meter("CS-0", 0.0, "SuspendedEV")  # a fleet car stays asleep
            rig.meter("CS-2", 0.0, "SuspendedEV")  # and so does CAR-2
            rig.clock.advance(130)
            rig.ctl.controller.request("tick")
            await rig.settle()
            knowledge = rig.ctl.learning.knowledge
            assert knowledge.vehicles["token:FLEET"].shared and knowledge.vehicles["token:FLEET"].no_resume == 0
            assert knowledge.vehicles["token:CAR-2"].last == NO_RESUME
            fleet_car = rig.sessions()[("CS-1", 1)]  # doubted for its station model (2 of 3 failed), not the token
            assert fleet_car.no_resume == "suspected" and "station model" in (fleet_car.no_resume_reason or "")
        finally:
            await rig.ctl.stop()
        stored = dict(await store.list_documents(f"grid:{RESUME_VEHICLE}"))
        assert stored["token:FLEET"]["shared"] is True
    finally:
        await store.close()


def test_a_burst_of_findings_does_not_judge_every_session_once_per_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a takeover thousands of paused cars resume at once: each resume finding used to judge
    every running session again (to mark shared car keys first), 30,000 x thousands of judgements
    that held a new grid leader's event loop for 16 s. Now a finding counts the keys in use at most
    once a second, and judges nobody (every plan judges all sessions anyway)."""
    from datetime import datetime, timezone

    from csms.grid.effects import learning as learning_module
    from csms.grid.effects.learning import ResumeLearning
    from csms.grid.journal import Journal
    from csms.grid.model.sessions import SessionBook

    now = datetime(2026, 12, 1, 18, tzinfo=timezone.utc)
    book = SessionBook()
    sessions = [book.adopt(f"BURST-{i}", 1, f"tx-{i}", now) for i in range(400)]
    for i, session in enumerate(sessions):
        session.add_vehicle_ids((f"token:CAR-{i}", "token:FLEET" if i < 2 else f"token:OWN-{i}"))
    learning = ResumeLearning(book, None, Journal(lambda: now))
    judged: list[str] = []
    counted: list[int] = []
    real_judge, real_mark = learning.judge, learning.mark_shared
    monkeypatch.setattr(learning, "judge", lambda s: (judged.append(s.station_id), real_judge(s)))
    monkeypatch.setattr(learning, "mark_shared", lambda ss: (counted.append(1), real_mark(ss)))
    monkeypatch.setattr(learning_module.time, "monotonic", lambda: 1000.0)  # the whole burst within a second
    for session in sessions:
        learning.finding(session, RESUMED, now)
    assert judged == [], f"{len(judged)} judgements for {len(sessions)} findings"
    assert len(counted) == 1, f"car keys counted {len(counted)} times for one burst"
    assert learning.knowledge.vehicles["token:FLEET"].shared  # still: the shared key taught nothing
    assert learning.knowledge.vehicles["token:FLEET"].resumed == 0
    assert learning.knowledge.vehicles["token:CAR-7"].resumed == 1

"""Charging stations built from the `ocpp` package's 2.0.1 ChargePoint: a third party's stations, not
our simulator.

Each EVSE feeds a car that takes up to ``max_current_a`` on ``phases`` phases. The station obeys the
charging profiles it holds as OCPP 2.0.1 describes (K01/K08), evaluated on **its own clock** (which may
be off by ``clock_offset``): the TxProfile of the running transaction with the highest stackLevel in
force, else a TxDefaultProfile (its EVSE before EVSE 0), capped by a ChargingStationMaxProfile.
Absolute schedules start at ``startSchedule``, Relative ones at the transaction's start; a schedule
past its ``duration`` is not in force. Profiles survive a lost connection (the station did not reboot)
unless ``forget_profiles_on_reconnect``.

It behaves like stations in the field: ``evse`` only on the first TransactionEvent of a transaction,
meter values in whatever unit it is told (``energy_unit``: ``Wh``, ``kWh`` or ``Wh*10^3``), power
reported or not (``report_power=False``: 0 W while the register climbs), profiles obeyed or not
(``obey=False``), cars that wake up after a pause or not (``start_transaction(resumes=False)``: paused
while drawing, the car stays SuspendedEV). It records every SetChargingProfile, and counts a TxProfile
as *identical* when the limit it prescribes over the next eight hours (on the station's clock) equals
what the station already had.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import websockets
from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result

from csms.tasks import cancel_and_wait
from tests.station_schedule import schedule_limit_a

VOLTAGE_V = 230.0
MIN_CURRENT_A = 6.0
IDENTICAL_WINDOW_S = 8 * 3600
IDENTICAL_STEP_S = 30


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass
class Push:
    """One SetChargingProfile the station received (profile in the ocpp package's snake_case)."""

    mono: float  # time.monotonic() when it arrived
    station_at: datetime  # the station's clock then
    evse_id: int
    profile: dict[str, Any]
    identical: bool = False

    @property
    def purpose(self) -> str:
        return self.profile["charging_profile_purpose"]

    @property
    def first_limit(self) -> float:
        return self.profile["charging_schedule"][0]["charging_schedule_period"][0]["limit"]


@dataclass
class Evse:
    evse_id: int
    transaction_id: str | None = None
    started_at: datetime | None = None  # station clock
    seq_no: int = 0
    energy_wh: float = 0.0
    power_w: float = 0.0
    car_max_a: float | None = None  # None: the station's max_current_a
    resumes: bool = True  # False: once paused while drawing, the car stays asleep (SuspendedEV) for good
    asleep: bool = False


@dataclass
class Installed:
    evse_id: int
    profile: dict[str, Any]
    received_at: datetime  # station clock


class LibStation:
    """One third-party station; ``connect`` / ``disconnect`` any number of times."""

    def __init__(self, station_id: str, evses: int = 1, *, max_current_a: float = 16.0, phases: int = 3,
                 clock_offset: timedelta = timedelta(0), rate_units: str = "A,W", stack_levels: int = 8,
                 periods_per_schedule: int | None = 24, report_power: bool = True, energy_unit: str = "Wh",
                 obey: bool = True, meter_interval_s: float = 0.5, forget_profiles_on_reconnect: bool = False,
                 answers_get_charging_profiles: bool = True, tx_profile_answer_delay_s: float = 0.0,
                 report_delay_s: float = 0.0) -> None:
        self.station_id = station_id
        self.evses = {i: Evse(i) for i in range(1, evses + 1)}
        self.max_current_a = max_current_a
        self.phases = phases
        self.clock_offset = clock_offset
        self.rate_units = rate_units
        self.stack_levels = stack_levels
        self.periods_per_schedule = periods_per_schedule
        self.report_power = report_power
        self.energy_unit = energy_unit
        self.obey = obey
        self.meter_interval_s = meter_interval_s
        self.forget_profiles_on_reconnect = forget_profiles_on_reconnect
        self.answers_get_charging_profiles = answers_get_charging_profiles
        #: A station that takes this long to answer a TxProfile (its reader stalls meanwhile, as a
        #: firmware busy writing flash would): it holds up every wave that includes it.
        self.tx_profile_answer_delay_s = tx_profile_answer_delay_s
        #: A station whose ReportChargingProfiles (what it held when asked) comes this long after its
        #: GetChargingProfiles answer; ``reports`` counts those sent.
        self.report_delay_s = report_delay_s
        self.reports = 0
        self.profiles: dict[int, Installed] = {}
        self.pushes: list[Push] = []
        self.calls: Counter[str] = Counter()
        self.booted = False
        self.connected = asyncio.Event()
        self._cp: _Cp | None = None
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._meter: asyncio.Task[None] | None = None
        self._last_tick = time.monotonic()
        self._ids = itertools.count(1)

    # Clock ----------------------------------------------------------------------------------------
    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_offset

    # Connection -----------------------------------------------------------------------------------
    async def connect(self, url: str, *, timeout: float = 10.0) -> None:
        """Open the websocket (``url`` without the station id), boot the first time, then report
        every running transaction (an ``Updated`` event without ``evse``, as after any reconnect)."""
        self._ws = await asyncio.wait_for(
            websockets.connect(f"{url}/{self.station_id}", subprotocols=["ocpp2.0.1"]),  # type: ignore[list-item]
            timeout)
        cp = _Cp(self.station_id, self._ws, response_timeout=10)
        cp.station = self
        self._cp = cp
        self._reader = asyncio.create_task(self._read(cp), name=f"{self.station_id} reader")
        if self.forget_profiles_on_reconnect:
            self.profiles.clear()
        if not self.booted:
            result = await cp.call(call.BootNotification(
                charging_station={"model": "LibCharger", "vendor_name": "ThirdParty", "serial_number": "SN"},
                reason="PowerUp"))
            assert result.status == "Accepted", result
            self.booted = True
            for evse_id in self.evses:
                await cp.call(call.StatusNotification(timestamp=iso(self.now()), connector_status="Available",
                                                      evse_id=evse_id, connector_id=1))
        self.connected.set()
        if self._meter is None or self._meter.done():
            self._last_tick = time.monotonic()
            self._meter = asyncio.create_task(self._meter_loop(), name=f"{self.station_id} meter")
        for evse in self.evses.values():
            if evse.transaction_id is not None:
                await self._updated(evse, "MeterValuePeriodic")

    async def _read(self, cp: _Cp) -> None:
        try:
            await cp.start()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.connected.clear()

    async def disconnect(self) -> None:
        self.connected.clear()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await cancel_and_wait([self._reader])

    async def stop(self) -> None:
        if self._meter is not None:  # its call's wait_for may swallow one cancel (Python 3.11)
            await cancel_and_wait([self._meter])
        await self.disconnect()

    async def wait_gone(self, timeout: float = 15.0) -> None:
        """Until the central system's side closed the socket (the daemon stopped or died)."""
        if self._reader is not None:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)

    async def _call(self, payload: Any) -> Any:
        if self._cp is None or not self.connected.is_set():
            return None  # offline: a real station would queue; these tests only need the latest state
        try:
            return await self._cp.call(payload)
        except (TimeoutError, websockets.ConnectionClosed):
            return None

    # Transactions -----------------------------------------------------------------------------------
    async def start_transaction(self, evse_id: int, transaction_id: str | None = None,
                                car_max_a: float | None = None, *, id_token: str | None = None,
                                resumes: bool = True) -> str:
        evse = self.evses[evse_id]
        evse.transaction_id = transaction_id or f"{self.station_id}-{evse_id}-{next(self._ids)}"
        evse.started_at, evse.seq_no, evse.car_max_a = self.now(), 0, car_max_a
        evse.resumes, evse.asleep = resumes, False
        evse.power_w = self._power_w(evse)
        await self._call(call.StatusNotification(timestamp=iso(self.now()), connector_status="Occupied",
                                                 evse_id=evse_id, connector_id=1))
        await self._call(call.TransactionEvent(
            event_type="Started", timestamp=iso(evse.started_at), trigger_reason="CablePluggedIn",
            seq_no=self._seq(evse), transaction_info={"transaction_id": evse.transaction_id,
                                                      "charging_state": "Charging"},
            evse={"id": evse_id, "connector_id": 1}, id_token={"id_token": id_token or f"TOKEN-{self.station_id}",
                                                               "type": "ISO14443"},
            meter_value=[self._meter_value(evse, "Transaction.Begin")]))
        return evse.transaction_id

    async def end_transaction(self, evse_id: int, reason: str = "EVDisconnected") -> None:
        evse = self.evses[evse_id]
        assert evse.transaction_id is not None
        await self._call(call.TransactionEvent(
            event_type="Ended", timestamp=iso(self.now()), trigger_reason="EVCommunicationLost",
            seq_no=self._seq(evse), transaction_info={"transaction_id": evse.transaction_id,
                                                      "charging_state": "Idle", "stopped_reason": reason},
            meter_value=[self._meter_value(evse, "Transaction.End")]))
        evse.transaction_id, evse.started_at, evse.power_w = None, None, 0.0
        for pid in [pid for pid, inst in self.profiles.items()
                    if inst.profile["charging_profile_purpose"] == "TxProfile" and inst.evse_id == evse_id]:
            del self.profiles[pid]

    async def send_needs(self, evse_id: int, energy_wh: float, departure: datetime) -> None:
        await self._call(call.NotifyEVChargingNeeds(evse_id=evse_id, charging_needs={
            "requested_energy_transfer": "AC_three_phase", "departure_time": iso(departure),
            "ac_charging_parameters": {"energy_amount": int(energy_wh), "ev_min_current": 6,
                                       "ev_max_current": int(self.max_current_a), "ev_max_voltage": 400}}))

    def _seq(self, evse: Evse) -> int:
        seq = evse.seq_no
        evse.seq_no += 1
        return seq

    async def _updated(self, evse: Evse, trigger: str) -> None:
        await self._call(call.TransactionEvent(
            event_type="Updated", timestamp=iso(self.now()), trigger_reason=trigger, seq_no=self._seq(evse),
            transaction_info={"transaction_id": evse.transaction_id,
                              "charging_state": "SuspendedEV" if evse.asleep else
                              "Charging" if evse.power_w > 0 else "SuspendedEVSE"},
            meter_value=[self._meter_value(evse, "Sample.Periodic")]))

    def _meter_value(self, evse: Evse, context: str) -> dict[str, Any]:
        if self.energy_unit == "kWh":
            energy = {"value": round(evse.energy_wh / 1000.0, 4), "unit_of_measure": {"unit": "kWh"}}
        elif self.energy_unit == "Wh*10^3":
            energy = {"value": round(evse.energy_wh / 1000.0, 4), "unit_of_measure": {"unit": "Wh", "multiplier": 3}}
        else:
            energy = {"value": round(evse.energy_wh, 2), "unit_of_measure": {"unit": "Wh"}}
        sampled = [{"measurand": "Energy.Active.Import.Register", "context": context, **energy}]
        reported = evse.power_w if self.report_power else 0.0
        sampled.append({"measurand": "Power.Active.Import", "context": context, "value": round(reported, 1),
                        "unit_of_measure": {"unit": "W"}})
        return {"timestamp": iso(self.now()), "sampled_value": sampled}

    async def _meter_loop(self) -> None:
        while True:
            await asyncio.sleep(self.meter_interval_s)
            self.tick()
            for evse in self.evses.values():
                if evse.transaction_id is not None:
                    await self._updated(evse, "MeterValuePeriodic")

    def tick(self) -> None:
        """Advance the meters to now (also called before reading power in a test)."""
        now = time.monotonic()
        hours = (now - self._last_tick) / 3600.0
        self._last_tick = now
        for evse in self.evses.values():
            if evse.transaction_id is not None:
                evse.energy_wh += evse.power_w * hours
                drawing = evse.power_w > 0
                evse.power_w = self._power_w(evse)
                if drawing and evse.power_w == 0 and not evse.resumes:
                    evse.asleep = True  # a car that does not wake up again after a pause

    # Power -----------------------------------------------------------------------------------------
    def power_kw(self) -> float:
        """What the station draws right now according to the profiles it holds (ground truth)."""
        return sum(self._power_w(e) for e in self.evses.values() if e.transaction_id is not None) / 1000.0

    def _power_w(self, evse: Evse) -> float:
        if evse.asleep:
            return 0.0
        car = evse.car_max_a if evse.car_max_a is not None else self.max_current_a
        amps = car if not self.obey else min(car, self.limit_a(evse.evse_id))
        if amps < MIN_CURRENT_A:
            amps = 0.0  # IEC 61851 cannot signal less than 6 A: a pause
        return amps * self.phases * VOLTAGE_V

    def limit_a(self, evse_id: int, at: datetime | None = None) -> float:
        """The composite limit (A per phase) for ``evse_id`` at ``at`` (station clock)."""
        at = at or self.now()
        value = self._limit_from(self.profiles, evse_id, at)
        return self.max_current_a if value is None else value

    def _limit_from(self, profiles: dict[int, Installed], evse_id: int, at: datetime) -> float | None:
        evse = self.evses[evse_id]
        tx = [p for p in profiles.values() if p.profile["charging_profile_purpose"] == "TxProfile"
              and p.evse_id == evse_id and p.profile.get("transaction_id") == evse.transaction_id]
        value = _highest(tx, at, evse.started_at, self.phases)
        if value is None:
            for scope in (evse_id, 0):
                default = [p for p in profiles.values()
                           if p.profile["charging_profile_purpose"] == "TxDefaultProfile" and p.evse_id == scope]
                value = _highest(default, at, evse.started_at, self.phases)
                if value is not None:
                    break
        cap = _highest([p for p in profiles.values()
                        if p.profile["charging_profile_purpose"] == "ChargingStationMaxProfile"], at, None,
                       self.phases)
        if cap is not None:
            value = cap if value is None else min(value, cap)
        return value

    def tx_pushes(self, since_mono: float = 0.0) -> list[Push]:
        return [p for p in self.pushes if p.purpose == "TxProfile" and p.mono >= since_mono]

    @property
    def identical_pushes(self) -> int:
        return sum(p.identical for p in self.pushes)

    # What the central system asks -------------------------------------------------------------------
    def install(self, evse_id: int, profile: dict[str, Any]) -> str:
        now = self.now()
        purpose = profile["charging_profile_purpose"]
        push = Push(time.monotonic(), now, evse_id, profile)
        self.pushes.append(push)
        if purpose == "TxProfile":
            tx = self.evses.get(evse_id)
            if tx is None or tx.transaction_id is None or profile.get("transaction_id") != tx.transaction_id:
                return "Rejected"
        if profile["stack_level"] > self.stack_levels:
            return "Rejected"
        unit = profile["charging_schedule"][0]["charging_rate_unit"]
        if unit not in self.rate_units.split(","):
            return "Rejected"
        if len(profile["charging_schedule"][0]["charging_schedule_period"]) > (self.periods_per_schedule or 24):
            return "Rejected"
        before = dict(self.profiles)
        # Same id replaces; so does the same purpose and stack level on the same EVSE (K01.FR.05).
        for pid in [pid for pid, inst in self.profiles.items()
                    if pid == profile["id"] or (inst.evse_id == evse_id
                                                and inst.profile["charging_profile_purpose"] == purpose
                                                and inst.profile["stack_level"] == profile["stack_level"])]:
            del self.profiles[pid]
        self.profiles[profile["id"]] = Installed(evse_id, profile, now)
        if purpose == "TxProfile":
            push.identical = self._same_limits(before, self.profiles, evse_id, now)
        self.tick()
        return "Accepted"

    def _same_limits(self, old: dict[int, Installed], new: dict[int, Installed], evse_id: int,
                     now: datetime) -> bool:
        for k in range(IDENTICAL_WINDOW_S // IDENTICAL_STEP_S + 1):
            at = now + timedelta(seconds=k * IDENTICAL_STEP_S)
            a, b = self._limit_from(old, evse_id, at), self._limit_from(new, evse_id, at)
            if (a is None) != (b is None) or (a is not None and b is not None and abs(a - b) > 0.05):
                return False
        return True

    def clear(self, criteria: dict[str, Any]) -> str:
        pid = criteria.get("charging_profile_id")
        crit = criteria.get("charging_profile_criteria") or {}
        gone = [p for p, inst in self.profiles.items()
                if (pid is None or p == pid)
                and (crit.get("evse_id") is None or inst.evse_id == crit["evse_id"])
                and (crit.get("charging_profile_purpose") is None
                     or inst.profile["charging_profile_purpose"] == crit["charging_profile_purpose"])
                and (crit.get("stack_level") is None or inst.profile["stack_level"] == crit["stack_level"])]
        for p in gone:
            del self.profiles[p]
        return "Accepted" if gone else "Unknown"

    def matching(self, evse_id: int | None, criteria: dict[str, Any]) -> list[Installed]:
        ids = criteria.get("charging_profile_id")
        return [inst for pid, inst in self.profiles.items()
                if (evse_id is None or inst.evse_id == evse_id)
                and (not ids or pid in ids)
                and (criteria.get("charging_profile_purpose") is None
                     or inst.profile["charging_profile_purpose"] == criteria["charging_profile_purpose"])
                and (criteria.get("stack_level") is None or inst.profile["stack_level"] == criteria["stack_level"])]


def _highest(candidates: list[Installed], at: datetime, tx_start: datetime | None, phases: int) -> float | None:
    """The value of the highest stackLevel among ``candidates`` that is in force at ``at``."""
    for inst in sorted(candidates, key=lambda i: -i.profile["stack_level"]):
        value = _evaluate(inst, at, tx_start, phases)
        if value is not None:
            return value
    return None


def _evaluate(inst: Installed, at: datetime, tx_start: datetime | None, phases: int) -> float | None:
    profile = inst.profile
    if profile.get("valid_from") and at < parse(profile["valid_from"]):
        return None
    if profile.get("valid_to") and at >= parse(profile["valid_to"]):
        return None
    schedule = profile["charging_schedule"][0]
    start = parse(schedule["start_schedule"]) if profile["charging_profile_kind"] != "Relative" else inst.received_at
    return schedule_limit_a(profile, schedule, start, at, tx_start, inst.received_at, phases)


class _Cp(ChargePoint):
    station: LibStation

    @on("SetChargingProfile")
    async def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        self.station.calls["SetChargingProfile"] += 1
        if self.station.tx_profile_answer_delay_s and charging_profile["charging_profile_purpose"] == "TxProfile":
            self.station.calls["TxProfile held"] += 1
            await asyncio.sleep(self.station.tx_profile_answer_delay_s)
        return call_result.SetChargingProfile(status=self.station.install(evse_id, charging_profile))

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **kwargs: Any) -> Any:
        self.station.calls["ClearChargingProfile"] += 1
        return call_result.ClearChargingProfile(status=self.station.clear(kwargs))

    @on("GetVariables")
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        self.station.calls["GetVariables"] += 1
        st = self.station
        known = {"RateUnit": st.rate_units, "ProfileStackLevel": str(st.stack_levels)}
        if st.periods_per_schedule is not None:  # None: a device model that does not report it
            known["PeriodsPerSchedule"] = str(st.periods_per_schedule)
        results = []
        for item in get_variable_data:
            name = item["variable"]["name"]
            row = {"component": item["component"], "variable": item["variable"]}
            if item["component"]["name"] == "SmartChargingCtrlr" and name in known:
                row.update(attribute_status="Accepted", attribute_value=known[name])
            else:
                row.update(attribute_status="UnknownVariable")
            results.append(row)
        return call_result.GetVariables(get_variable_result=results)

    @on("GetChargingProfiles")
    def on_get_charging_profiles(self, request_id: int, charging_profile: dict[str, Any],
                                 evse_id: int | None = None, **_: Any) -> Any:
        self.station.calls["GetChargingProfiles"] += 1
        if not self.station.answers_get_charging_profiles:
            return call_result.GetChargingProfiles(status="NoProfiles")
        found = self.station.matching(evse_id, charging_profile)
        return call_result.GetChargingProfiles(status="Accepted" if found else "NoProfiles")

    @after("GetChargingProfiles")
    async def report_charging_profiles(self, request_id: int, charging_profile: dict[str, Any],
                                       evse_id: int | None = None, **_: Any) -> None:
        if not self.station.answers_get_charging_profiles:
            return
        found = self.station.matching(evse_id, charging_profile)
        by_evse: dict[int, list[dict[str, Any]]] = {}
        for inst in found:
            by_evse.setdefault(inst.evse_id, []).append(inst.profile)
        if self.station.report_delay_s:
            await asyncio.sleep(self.station.report_delay_s)
        self.station.reports += 1
        for n, (evse, profiles) in enumerate(sorted(by_evse.items())):
            with contextlib.suppress(Exception):
                await self.call(call.ReportChargingProfiles(
                    request_id=request_id, charging_limit_source="CSO", evse_id=evse,
                    charging_profile=profiles, tbc=n < len(by_evse) - 1))

    @on("GetCompositeSchedule")
    def on_get_composite_schedule(self, duration: int, evse_id: int, charging_rate_unit: str | None = None,
                                  **_: Any) -> Any:
        self.station.calls["GetCompositeSchedule"] += 1
        st = self.station
        if evse_id not in st.evses:
            return call_result.GetCompositeSchedule(status="Rejected")
        amps = st.limit_a(evse_id)
        unit = charging_rate_unit or "A"
        limit = amps if unit == "A" else amps * st.phases * VOLTAGE_V
        return call_result.GetCompositeSchedule(status="Accepted", schedule={
            "evse_id": evse_id, "duration": duration, "schedule_start": iso(st.now()),
            "charging_rate_unit": unit,
            "charging_schedule_period": [{"start_period": 0, "limit": round(limit, 1),
                                          "number_phases": st.phases}]})

    @on("TriggerMessage")
    def on_trigger_message(self, **_: Any) -> Any:
        self.station.calls["TriggerMessage"] += 1
        return call_result.TriggerMessage(status="Rejected")

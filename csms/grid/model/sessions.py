"""What the grid controller knows about stations and charging sessions, built from bus events.

Everything here is plain state updated synchronously from the bus (cheap enough for the
per-message path); planning and I/O happen elsewhere. A session is one transaction on one EVSE.
Its energy need comes, in order of precedence, from the operator API, from the car
(NotifyEVChargingNeeds, ISO 15118) or from the site's defaults.

Energy is net: a need counts import minus export since it was stated (both meter registers), so
what a V2G car gave back is charged again, and its dischargeable energy shrinks by what it
already discharged (profiles/netenergy.py says what the planner's fields mean).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from csms.domain.events import TransactionChanged
from csms.domain.meter import Reading
from profiles.composite import parse_datetime
from profiles.model import NO_RESUME_VALUES, RESUMES
from profiles.netenergy import StatedNeed, session_need_energy
from profiles.planner import PHASE_NAMES, SessionNeed
from profiles.profile_builder import Unit
from profiles.station_clock import OFFSET_WINDOW, clock_offset_s

CHARGING_STATES_DRAWING = frozenset({"Charging"})
SUSPENDED_STATES = frozenset({"SuspendedEV", "SuspendedEVSE"})
IN_STEP_S = 2.0  # a station clock this close to ours counts as in step (network delay, rounding)
ENERGY_WINDOW_S = 1.0  # shortest span (station time) over which the register's rate is taken
MAX_VEHICLE_IDS = 8  # keys kept per session (a station cannot grow a session without bound)


@dataclass
class Defaults:
    """Assumptions for a session whose car tells us nothing (plain AC without ISO 15118)."""

    energy_kwh: float = 20.0
    dwell_s: float = 8 * 3600.0
    guaranteed_kwh: float = 0.0
    v2g_guaranteed_kwh: float = 0.0  # a V2G car's guaranteed minimum when its needs state none
    min_current_a: float = 6.0
    max_current_a: float = 32.0
    phases: int = 3


@dataclass
class StationCaps:
    """What one station accepts in SetChargingProfile, from GetVariables or a configured model rule."""

    rate_units: tuple[str, ...] = ("A",)
    max_stack_level: int = 0
    periods_per_schedule: int = 1
    v2g: bool = False
    phases: int = 3
    max_current_a: float = 32.0
    min_current_a: float = 6.0
    source: str = "assumed"  # assumed | device-model | rule
    relative_tx: bool = True  # takes a Relative TxProfile (the immediate cut); False once it refused one
    # OCPP 2.1: schedule periods carry an operationMode (ChargingOnly; CentralSetpoint with a negative
    # setpoint to discharge) instead of the 2.0.1 convention of a negative limit.
    operation_modes: bool = False

    @property
    def unit(self) -> Unit:
        """The unit we push in: amps when the station takes them (the planner thinks in amps)."""
        return "W" if "A" not in self.rate_units and self.rate_units[:1] == ("W",) else "A"

    @property
    def tx_unit(self) -> Unit:
        """The unit of TxProfiles: a 2.1 V2X station gets watts when it takes them (setpoints in W)."""
        return "W" if self.operation_modes and self.v2g and "W" in self.rate_units else self.unit


@dataclass
class Station:
    station_id: str
    connected: bool = False
    vendor: str | None = None
    model: str | None = None
    caps: StationCaps = field(default_factory=StationCaps)
    ready: bool = False  # capabilities read and fail-safe installed
    failsafe_status: str | None = None  # outcome of installing the fail-safe TxDefaultProfile
    setup_running: bool = False
    setup_again: bool | None = None  # a forced set-up asked for while one ran (its ``reconcile``), run after it
    clock_offset_s: float | None = None  # its clock minus ours, from its messages' timestamps
    clock_readings: list[float] = field(default_factory=list)  # timestamp minus receipt of recent messages
    ocpp_version: str | None = None  # the subprotocol of its connection, e.g. "ocpp2.1"


@dataclass
class Need:
    """A session's energy wish; kWh counted from the meter reading when the wish was made."""

    energy_kwh: float
    departure: datetime
    guaranteed_kwh: float = 0.0
    source: str = "default"  # default | ev | api
    min_current_a: float | None = None
    max_current_a: float | None = None
    phases: int | None = None
    v2g: bool = False
    max_discharge_kw: float = 0.0
    dischargeable_kwh: float = 0.0
    baseline_wh: float | None = None  # import register when the need was set
    baseline_export_wh: float | None = None  # export register then (None: the session's first export reading)


@dataclass
class Session:
    station_id: str
    evse_id: int
    transaction_id: str
    started_at: datetime
    charging_state: str | None = None
    power_kw: float | None = None  # last measured net power (negative = discharging)
    power_at: datetime | None = None
    energy_wh: float | None = None  # import register, last reading
    start_energy_wh: float | None = None
    export_wh: float | None = None  # export register, last reading (None: the station sends none)
    start_export_wh: float | None = None
    energy_at: datetime | None = None  # station time of the register readings taken (a late one is not)
    export_at: datetime | None = None
    soc: float | None = None
    need: Need | None = None
    # Control state (set by the pusher and the verifier).
    setpoint_a: float | None = None  # what is in force now according to the last accepted push
    pushed_a: float | None = None  # the first value of the last accepted push (pause/resume steps are judged on it)
    setpoint_kw: float | None = None
    setpoint_since: datetime | None = None  # when the setpoint in force last changed (a push or a step of its schedule)
    pushed_at: datetime | None = None
    push_status: str | None = None
    fixed_kw: float | None = None  # uncontrollable: budgeted at this draw
    fixed_reason: str | None = None
    can_pause: bool = True
    no_pause_reason: str | None = None
    # Who the car is (idToken, EVCCID, vehicle id: "token:..", "evccid:..", "vehicle:.."), and what
    # earlier sessions taught about it or its station model resuming after a pause (csms/grid/model/resume.py).
    vehicle_ids: tuple[str, ...] = ()
    no_resume: str = RESUMES
    no_resume_reason: str | None = None
    # What the last plan says of it, for the operator: why it falls short, and from when it is
    # planned off until departure (a car that does not resume, when the limit leaves no other way).
    plan_reason: str | None = None
    planned_off_from: datetime | None = None
    plan_guarantee_short_kwh: float = 0.0
    resumed_at: datetime | None = None  # a 0 -> >0 setpoint was accepted at this time
    paused_while_drawing: bool = False
    overdraw_count: int = 0
    # Energy cross-check: the register's rate over the last window of at least ENERGY_WINDOW_S
    # (station time), what the station reported as power, and whether its power figure is trusted.
    energy_kw: float | None = None
    energy_window_from: datetime | None = None  # our clock: when the window behind energy_kw began
    energy_mark: tuple[datetime, float, datetime, float | None] | None = None  # its start: station time, Wh,
    #                                                                           our time, reported kW then
    window_reported_kw: tuple[float | None, float | None] = (None, None)  # reported at the window's start and end
    reported_kw: float | None = None
    mismatch_count: int = 0
    mismatch_window: datetime | None = None  # the last energy window judged
    power_from_energy: bool = False  # its reported power contradicted its energy register

    @property
    def key(self) -> tuple[str, int]:
        return self.station_id, self.evse_id

    @property
    def session_id(self) -> str:
        """The planner's id of this session (``profiles`` names sessions by it; :func:`parse_session_id`)."""
        return f"{self.station_id}#{self.evse_id}"

    @property
    def imported_kwh(self) -> float:
        return _since(self.energy_wh, self.start_energy_wh)

    @property
    def exported_kwh(self) -> float:
        return _since(self.export_wh, self.start_export_wh)

    @property
    def delivered_kwh(self) -> float:
        """Net energy of the session so far: import minus export (negative: it gave more than it took)."""
        return self.imported_kwh - self.exported_kwh

    def add_vehicle_ids(self, keys: tuple[str, ...]) -> None:
        """Keys the car is known by, in the order first heard (a few at most)."""
        new = [k for k in keys if k not in self.vehicle_ids]
        if new:
            self.vehicle_ids = (*self.vehicle_ids, *new)[:MAX_VEHICLE_IDS]

    def state(self) -> str:
        """charging / discharging / paused / idle, from the latest reading and setpoint."""
        if self.power_kw is not None and self.power_kw < -0.05:
            return "discharging"
        if self.power_kw is not None and self.power_kw > 0.05:
            return "charging"
        if self.setpoint_a == 0 or self.charging_state == "SuspendedEVSE":
            return "paused"
        return "idle"


class SessionBook:
    """Stations and their running sessions, keyed by (station_id, evse_id)."""

    def __init__(self, defaults: Defaults | None = None) -> None:
        self.defaults = defaults or Defaults()
        self.stations: dict[str, Station] = {}
        self.sessions: dict[tuple[str, int], Session] = {}
        self._by_tx: dict[tuple[str, str], tuple[str, int]] = {}
        self._evses: dict[str, set[int]] = {}  # station -> EVSEs with a session (of_station without a scan)
        self._pending_needs: dict[tuple[str, int], Need] = {}

    # Stations -------------------------------------------------------------------------------
    def station(self, station_id: str) -> Station:
        st = self.stations.get(station_id)
        if st is None:
            st = self.stations[station_id] = Station(station_id)
        return st

    def clock_reading(self, station_id: str, timestamp: str | None, received_at: datetime) -> None:
        """A live message stamped ``timestamp`` by the station arrived at ``received_at`` (our clock):
        update its clock offset (whole seconds; within a couple of seconds counts as in step)."""
        if not timestamp:
            return
        try:
            at = parse_datetime(timestamp)
        except ValueError:
            return
        st = self.station(station_id)
        st.clock_readings.append((at - received_at).total_seconds())
        del st.clock_readings[:-OFFSET_WINDOW]
        offset = clock_offset_s(st.clock_readings)
        st.clock_offset_s = None if offset is None else (0.0 if abs(offset) < IN_STEP_S else float(round(offset)))

    def of_station(self, station_id: str) -> list[Session]:
        """The station's sessions by EVSE. Indexed: 10,000 stations set up at once by a new grid leader
        each asking this made a scan of every session quadratic (40 s of a stalled event loop)."""
        found = (self.sessions.get((station_id, evse)) for evse in sorted(self._evses.get(station_id, ())))
        return [s for s in found if s is not None]

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self.sessions.values()))

    def __len__(self) -> int:
        return len(self.sessions)

    # Transactions ---------------------------------------------------------------------------
    def find(self, station_id: str, transaction_id: str | None, evse_id: int | None) -> Session | None:
        if transaction_id is not None:
            key = self._by_tx.get((station_id, transaction_id))
            if key is not None:
                return self.sessions.get(key)
        if evse_id is not None:
            return self.sessions.get((station_id, evse_id))
        return None

    def transaction(self, station_id: str, event: TransactionChanged, now: datetime) -> tuple[Session | None, str]:
        """Apply a transaction.started/updated event; returns (session, what changed: new|state|reading|none)."""
        tx_id = event.transaction_id
        session = self.find(station_id, tx_id, None)
        change = "none"
        if session is None:
            evse_id = event.evse_id
            if not isinstance(evse_id, int) or evse_id <= 0:
                return None, "none"  # an Updated without evse for a transaction we never saw
            session = self.adopt(station_id, evse_id, tx_id, now)
            change = "new"
        session.add_vehicle_ids(event.vehicle_ids)
        state = event.charging_state
        if state and state != session.charging_state:
            session.charging_state = state
            change = "state" if change == "none" else change
        reading = event.reading
        if reading is not None and self.reading(session, reading, now) and change == "none":
            change = "reading"
        return session, change

    def adopt(self, station_id: str, evse_id: int, transaction_id: str, started_at: datetime) -> Session:
        """A new session for a transaction on ``evse_id`` (replacing whatever that EVSE had)."""
        old = self.sessions.get((station_id, evse_id))
        if old is not None:
            self._by_tx.pop((station_id, old.transaction_id), None)
        session = Session(station_id, evse_id, transaction_id, started_at)
        self.sessions[session.key] = session
        self._by_tx[(station_id, transaction_id)] = session.key
        self._evses.setdefault(station_id, set()).add(evse_id)
        pending = self._pending_needs.pop(session.key, None)
        if pending is not None:
            session.need = pending
        return session

    def ended(self, station_id: str, transaction_id: str) -> Session | None:
        session = self.find(station_id, transaction_id, None)
        if session is None:
            return None
        self.sessions.pop(session.key, None)
        self._by_tx.pop((station_id, session.transaction_id), None)
        evses = self._evses.get(station_id)
        if evses is not None:
            evses.discard(session.evse_id)
            if not evses:
                del self._evses[station_id]
        return session

    def reading(self, session: Session, reading: Reading, now: datetime) -> bool:
        """Take a meter reading; True if it says something about the power drawn (reported power, or
        a new rate of the energy register)."""
        fresh_energy = False
        reported = None if reading.power_w is None else reading.power_w / 1000.0
        at = _instant(reading.timestamp)
        if reading.energy_wh is not None and not _stale(at, session.energy_at, reading.energy_wh, session.energy_wh):
            fresh_energy = self._energy(session, reading.energy_wh, reading.timestamp, now, reported)
            session.energy_wh, session.energy_at = reading.energy_wh, at
            if session.start_energy_wh is None:
                session.start_energy_wh = reading.energy_wh
            if session.need is not None and session.need.baseline_wh is None:
                session.need.baseline_wh = reading.energy_wh
        if reading.export_wh is not None and not _stale(at, session.export_at, reading.export_wh, session.export_wh):
            session.export_wh, session.export_at = reading.export_wh, at
            if session.start_export_wh is None:
                session.start_export_wh = reading.export_wh
        if reading.soc is not None:
            session.soc = reading.soc
        if reported is not None:
            session.reported_kw = reported
        if session.energy_kw is not None and (session.power_from_energy or reading.power_w is None):
            # No power figure, or one that proved wrong: the register says what is drawn.
            if fresh_energy:
                session.power_kw, session.power_at = session.energy_kw, now
            return fresh_energy
        if reading.power_w is None:
            return False
        session.power_kw = reading.power_w / 1000.0
        session.power_at = now
        return True

    @staticmethod
    def _energy(session: Session, wh: float, timestamp: str | None, now: datetime, reported: float | None) -> bool:
        """Update the register's rate; True when a new window closed."""
        at = now
        if timestamp:
            try:
                at = parse_datetime(timestamp)
            except ValueError:
                at = now
        mark = session.energy_mark
        if mark is None or at < mark[0] or wh < mark[1]:  # first reading, a clock jump back, a meter reset
            session.energy_mark = (at, wh, now, reported)
            return False
        span = (at - mark[0]).total_seconds()
        if span < ENERGY_WINDOW_S:
            return False
        session.energy_kw = (wh - mark[1]) / 1000.0 / (span / 3600.0)
        session.energy_window_from = mark[2]
        session.window_reported_kw = (mark[3], reported)
        session.energy_mark = (at, wh, now, reported)
        return True

    # Needs ----------------------------------------------------------------------------------
    def ev_needs(self, station_id: str, evse_id: int, needs: dict[str, Any], now: datetime) -> Session | None:
        """Apply NotifyEVChargingNeeds (it may arrive just before the transaction is known to us)."""
        need = need_from_ev(needs, now, self.defaults)
        session = self.sessions.get((station_id, evse_id))
        if session is None:
            self._pending_needs[(station_id, evse_id)] = need
            return None
        if session.need is not None and session.need.source == "api":
            # The operator's word wins over the car's, but keep what only the car knows.
            session.need.min_current_a, session.need.max_current_a = need.min_current_a, need.max_current_a
            session.need.phases, session.need.v2g = need.phases, need.v2g
            # The car states what it may give from now on; the operator's need counts export since its own
            # statement, so what was exported since then is added back (the budget left is the car's word).
            session.need.max_discharge_kw = need.max_discharge_kw
            session.need.dischargeable_kwh = need.dischargeable_kwh + exported_kwh(session, session.need)
            return session
        need.baseline_wh, need.baseline_export_wh = session.energy_wh, session.export_wh
        session.need = need
        return session

    def set_api_need(self, station_id: str, evse_id: int, now: datetime, energy_kwh: float | None = None,
                     departure: datetime | None = None, guaranteed_kwh: float | None = None) -> Session:
        """The operator's (or driver app's) word on a session; raises KeyError/ValueError on bad input."""
        session = self.sessions.get((station_id, evse_id))
        if session is None:
            raise KeyError(f"no running session on {station_id} evse {evse_id}")
        for name, value in (("energy_kwh", energy_kwh), ("guaranteed_kwh", guaranteed_kwh)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0 or value > 1000):
                raise ValueError(f"{name} must be a number between 0 and 1000 kWh, got {value!r}")
        if departure is not None:
            if not isinstance(departure, datetime) or departure.tzinfo is None:
                raise ValueError(f"departure must be a timezone-aware datetime, got {departure!r}")
        old = session.need
        base = old if old is not None else default_need(session, now, self.defaults)
        remaining_before = remaining_kwh(session, base)
        # The car's dischargeable energy was stated once: what it discharged since still counts.
        dischargeable = max(0.0, base.dischargeable_kwh - exported_kwh(session, base))
        need = Need(
            energy_kwh=float(energy_kwh) if energy_kwh is not None else remaining_before,
            departure=departure if departure is not None else base.departure,
            guaranteed_kwh=float(guaranteed_kwh) if guaranteed_kwh is not None else base.guaranteed_kwh,
            source="api", min_current_a=base.min_current_a, max_current_a=base.max_current_a, phases=base.phases,
            v2g=base.v2g, max_discharge_kw=base.max_discharge_kw, dischargeable_kwh=dischargeable,
            baseline_wh=session.energy_wh, baseline_export_wh=session.export_wh,
        )
        session.need = need
        return session


# ---------------------------------------------------------------------------------------------
# Needs -> planner input
# ---------------------------------------------------------------------------------------------


def need_record(need: Need) -> dict[str, Any]:
    """A need as a JSON-able record (the operator's needs are stored so they survive a restart)."""
    return {"energy_kwh": need.energy_kwh, "departure": need.departure.isoformat(),
            "guaranteed_kwh": need.guaranteed_kwh, "source": need.source, "min_current_a": need.min_current_a,
            "max_current_a": need.max_current_a, "phases": need.phases, "v2g": need.v2g,
            "max_discharge_kw": need.max_discharge_kw, "dischargeable_kwh": need.dischargeable_kwh,
            "baseline_wh": need.baseline_wh, "baseline_export_wh": need.baseline_export_wh}


def need_from_record(record: dict[str, Any]) -> Need:
    """What :func:`need_record` wrote; ValueError/KeyError/TypeError for a damaged record."""
    departure = datetime.fromisoformat(record["departure"])
    if departure.tzinfo is None:
        raise ValueError("a stored departure needs a UTC offset")
    phases = record.get("phases")
    return Need(energy_kwh=float(record["energy_kwh"]), departure=departure,
                guaranteed_kwh=float(record.get("guaranteed_kwh") or 0.0), source=str(record.get("source", "api")),
                min_current_a=_number(record.get("min_current_a")), max_current_a=_number(record.get("max_current_a")),
                phases=int(phases) if isinstance(phases, int) else None, v2g=bool(record.get("v2g")),
                max_discharge_kw=float(record.get("max_discharge_kw") or 0.0),
                dischargeable_kwh=float(record.get("dischargeable_kwh") or 0.0),
                baseline_wh=_number(record.get("baseline_wh")),
                baseline_export_wh=_number(record.get("baseline_export_wh")))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def need_from_ev(needs: dict[str, Any], now: datetime, defaults: Defaults) -> Need:
    """Read chargingNeeds (2.0.1 AC/DC parameters; V2X values from 2.1 fields or our customData)."""
    ac = needs.get("acChargingParameters") or {}
    dc = needs.get("dcChargingParameters") or {}
    v2x = needs.get("v2xChargingParameters") or {}
    custom = needs.get("customData") or {}
    departure = defaults_departure(now, defaults)
    if isinstance(needs.get("departureTime"), str):
        try:
            departure = parse_datetime(needs["departureTime"])
        except ValueError:
            pass
    energy_wh = _number(ac.get("energyAmount")) or _number(dc.get("energyAmount"))
    # 2.1: the energy to the car's target first, else up to full (0 is a value: the target is reached).
    max_v2x = next((v for v in (_number(v2x.get("evTargetEnergyRequest")), _number(v2x.get("evMaxEnergyRequest")),
                                _number(custom.get("evMaxV2XEnergyRequest"))) if v is not None), None)
    min_v2x = _number(v2x.get("evMinV2XEnergyRequest"))  # 2.1: to the lower edge of the V2X window
    if min_v2x is None:
        min_v2x = _number(v2x.get("evMinEnergyRequest"))
    if min_v2x is None:
        min_v2x = _number(needs.get("evMinV2XEnergyRequest"))
    if min_v2x is None:
        min_v2x = _number(custom.get("evMinV2XEnergyRequest"))
    energy_kwh = (max_v2x if max_v2x is not None else energy_wh if energy_wh is not None
                  else defaults.energy_kwh * 1000.0) / 1000.0
    discharge_w = _number(v2x.get("maxDischargePower")) or _number(custom.get("evMaxDischargePower")) or 0.0
    phases = 1 if needs.get("requestedEnergyTransfer") in ("AC_single_phase", "AC_BPT_single_phase") else None
    if needs.get("requestedEnergyTransfer") in ("AC_three_phase", "AC_BPT"):
        phases = 3
    v2g = discharge_w > 0 and min_v2x is not None
    # evMinV2XEnergyRequest > 0: the user's guaranteed minimum; <= 0: none stated (what may be taken
    # out), so a V2G car gets the configured minimum like every other car.
    guaranteed = (min_v2x or 0.0) / 1000.0
    if guaranteed <= 0 and v2g:
        guaranteed = defaults.v2g_guaranteed_kwh
    return Need(
        energy_kwh=max(0.0, energy_kwh),
        departure=departure,
        guaranteed_kwh=max(0.0, guaranteed),
        source="ev",
        min_current_a=_number(ac.get("evMinCurrent")),
        max_current_a=_number(ac.get("evMaxCurrent")),
        phases=phases,
        v2g=v2g,
        max_discharge_kw=abs(discharge_w) / 1000.0,
        dischargeable_kwh=max(0.0, -(min_v2x or 0.0) / 1000.0),
    )


def defaults_departure(now: datetime, defaults: Defaults) -> datetime:
    return now + timedelta(seconds=defaults.dwell_s)


def default_need(session: Session, now: datetime, defaults: Defaults) -> Need:
    return Need(energy_kwh=defaults.energy_kwh, departure=session.started_at + timedelta(seconds=defaults.dwell_s),
                guaranteed_kwh=defaults.guaranteed_kwh, source="default", baseline_wh=session.start_energy_wh)


def _instant(timestamp: str | None) -> datetime | None:
    if not timestamp:
        return None
    try:
        return parse_datetime(timestamp)
    except ValueError:
        return None


def _stale(at: datetime | None, last_at: datetime | None, wh: float, last_wh: float | None) -> bool:
    """A register reading older than the one taken and not above it: a late (offline-queued or
    reordered) message, which must not roll the register back. A reading stamped earlier but
    higher is taken (the station's clock was set back), as is one stamped later but lower (a reset)."""
    return at is not None and last_at is not None and last_wh is not None and at < last_at and wh <= last_wh


def _since(now_wh: float | None, then_wh: float | None) -> float:
    """kWh a register counted from ``then_wh`` to ``now_wh`` (0 unknown, or after a meter reset)."""
    if now_wh is None or then_wh is None:
        return 0.0
    return max(0.0, (now_wh - then_wh) / 1000.0)


def imported_kwh(session: Session, need: Need) -> float:
    """Import since the need was stated."""
    return _since(session.energy_wh, need.baseline_wh)


def exported_kwh(session: Session, need: Need) -> float:
    """Export since the need was stated (from the session's first export reading when the need came first)."""
    base = need.baseline_export_wh if need.baseline_export_wh is not None else session.start_export_wh
    return _since(session.export_wh, base)


def remaining_kwh(session: Session, need: Need) -> float:
    """Energy still wanted: the wish minus the net energy (import minus export) since it was made."""
    return max(0.0, need.energy_kwh - (imported_kwh(session, need) - exported_kwh(session, need)))


#: Why a session may no longer be paused once its car stayed suspended when offered current again.
DID_NOT_RESUME = "did not resume after a pause"
#: Below this a car counts as not drawing (as the verifier judges it).
NOT_DRAWING_KW = 0.2


def is_off_until_departure(session: Session, now: datetime) -> bool:
    """Is this car, one that does not resume, paused for good (``SessionNeed.off_until_departure``)?

    Yes when it stayed suspended after a resume and does not draw, or when the last plan took it
    off from a time that has come and the station runs 0 A: planning its minimum again would keep
    room for a car that will not take it (and would plan it paused, then resumed)."""
    if session.can_pause and session.no_resume == RESUMES:
        return False
    if session.no_pause_reason == DID_NOT_RESUME:
        return (session.power_kw or 0.0) <= NOT_DRAWING_KW
    off = session.planned_off_from
    return off is not None and off <= now and not (session.setpoint_a or 0.0) > 0


def session_need(session: Session, caps: StationCaps, now: datetime, defaults: Defaults,
                 wiring: tuple[str, ...] | None = None, connected: bool = True,
                 held_kw: float | None = None) -> SessionNeed:
    """The planner's view of one session.

    A session on a disconnected station, or one that proved uncontrollable, is budgeted at its
    last known draw (``fixed_kw``); one that keeps the schedule it holds while newcomers are
    planned beside it, at ``held_kw`` (the most that schedule allows). V2G is offered only when
    both the station model and the car support it.
    """
    need = session.need or default_need(session, now, defaults)
    phases = need.phases or caps.phases or defaults.phases
    phases = max(1, min(3, phases, caps.phases))
    min_a = max(caps.min_current_a, need.min_current_a if need.min_current_a is not None else defaults.min_current_a)
    max_a = min(caps.max_current_a, need.max_current_a if need.max_current_a is not None else defaults.max_current_a)
    if max_a <= 0:
        max_a = caps.max_current_a
    min_a = min(min_a, max_a)
    energy = session_need_energy(
        StatedNeed(need.energy_kwh, need.guaranteed_kwh, need.dischargeable_kwh),
        imported_kwh(session, need), exported_kwh(session, need), default_guaranteed_kwh=defaults.guaranteed_kwh)
    remaining, guaranteed = energy.energy_needed_kwh, energy.guaranteed_kwh
    departure_s = max(0.0, (need.departure - now).total_seconds())
    fixed = session.fixed_kw
    if not connected:
        fixed = session.power_kw if session.power_kw is not None else (fixed or 0.0)
    elif held_kw is not None and fixed is None:
        fixed = held_kw
    wiring = wiring or PHASE_NAMES
    if len(wiring) < phases:
        wiring = PHASE_NAMES
    v2g = bool(caps.v2g and need.v2g and need.max_discharge_kw > 0)
    no_resume = session.no_resume if session.no_resume in NO_RESUME_VALUES else RESUMES
    fields = {
        "session_id": session.session_id,
        "phases": phases, "phase_wiring": tuple(wiring), "min_current_a": float(min_a), "max_current_a": float(max_a),
        "energy_needed_kwh": float(remaining),
        "guaranteed_kwh": float(min(guaranteed, remaining) if not v2g else guaranteed),
        "departure_s": float(departure_s if departure_s > 0 else 1.0),
        "can_pause": bool(session.can_pause), "v2g": v2g,
        "max_discharge_kw": float(need.max_discharge_kw) if v2g else 0.0,
        "dischargeable_kwh": float(energy.dischargeable_kwh) if v2g else 0.0,
        "fixed_kw": None if fixed is None else float(fixed),
        "efficiency": 1.0,
        "no_resume": no_resume,
        "discharged_kwh": float(energy.discharged_kwh) if v2g else 0.0,
        "off_until_departure": is_off_until_departure(session, now),
    }
    return _checked_need(fields)


_NEED_NUMBERS = ("min_current_a", "max_current_a", "energy_needed_kwh", "guaranteed_kwh", "departure_s",
                 "max_discharge_kw", "dischargeable_kwh", "discharged_kwh")


def _checked_need(fields: dict[str, Any]) -> SessionNeed:
    """A SessionNeed from values ``session_need`` already clamped, without the full validation
    (it is most of the cost of planning 10,000 sessions). Only what clamping cannot rule out is
    checked here; anything odd goes through the validating constructor, which names the problem."""
    numbers = [fields[name] for name in _NEED_NUMBERS]
    fixed = fields["fixed_kw"]
    if (all(math.isfinite(x) and x >= 0 for x in numbers) and (fixed is None or math.isfinite(fixed))
            and 0 < fields["max_current_a"] and fields["min_current_a"] <= fields["max_current_a"]
            and fields["phases"] in (1, 2, 3) and len(fields["phase_wiring"]) >= fields["phases"]
            and set(fields["phase_wiring"]) <= set(PHASE_NAMES)
            and len(set(fields["phase_wiring"])) == len(fields["phase_wiring"])):
        need = object.__new__(SessionNeed)
        need.__dict__.update(fields)
        return need
    return SessionNeed(**fields)


def parse_session_id(session_id: str) -> tuple[str, int]:
    station_id, _, evse = session_id.rpartition("#")
    return station_id, int(evse)

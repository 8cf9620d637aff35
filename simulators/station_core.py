"""The charging station's behaviour without any network: state machine, energy, smart charging.

`StationCore` is driven by `advance(now)` on a simulated clock and by the central system's
requests; everything it wants to tell the central system lands in `outbox` (`Outgoing` items)
for the network layer (`simulators.station`) to send. The physics, the EV, the meter and the
profile maths are one for every OCPP version; which messages carry them is the business of the
station's version layer (`self.dialect`, from `simulators.versions`), which the core calls at
each event (a transaction starts, a state changes, a sample is due) and which answers the
central system's requests through the core's neutral operations (`install_profile`,
`remote_start`, `reset`, ...). Unit tests drive it directly with a `ManualClock`; fleets drive
it in real time x speed.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from profiles.composite import CENTRAL_SETPOINT, CHARGING_ONLY, Period
from profiles.composite import IDLE as IDLE_MODE
from profiles.units import VOLTAGE_V
from simulators.charging_profiles import ProfileStore, status_info
from simulators.clock import Clock
from simulators.device_model import DeviceModel
from simulators.ev import EV, EVSession
from simulators.models import StationModel

if TYPE_CHECKING:
    from simulators.versions.base import Dialect

CHARGING, EV_CONNECTED, SUSPENDED_EV, SUSPENDED_EVSE, IDLE = (
    "Charging", "EVConnected", "SuspendedEV", "SuspendedEVSE", "Idle")
_MAX_STEPS_PER_ADVANCE = 100_000


@dataclass
class Outgoing:
    """A station-initiated CALL waiting to be sent. `on_result(None)` means it failed for good.

    `prepare`, when set, turns the payload into its final form just before it is sent (or None:
    nothing to send any more); OCPP 1.6 uses it to fill in a transaction id the central system
    gave after the message was queued. `periodic` marks a sample the offline queue may drop first.
    """

    action: str
    payload: dict
    transactional: bool = False
    on_result: Callable[[dict | None], None] | None = None
    attempts: int = 0
    prepare: Callable[[dict], dict | None] | None = None
    periodic: bool = False


@dataclass
class Transaction:
    id: str
    started_at: datetime
    seq_no: int = 0
    authorized: bool = False
    id_token: dict | None = None
    charging_state: str = EV_CONNECTED
    remote_start_id: int | None = None
    paused_by_station: bool = False  # for the "ignores the resumed limit" quirk
    discharge_allowed: bool = True  # OCPP 2.1 NotifyAllowedEnergyTransfer can take it away
    start_import_wh: float = 0.0

    def next_seq(self) -> int:
        seq = self.seq_no
        self.seq_no += 1
        return seq


@dataclass
class Evse:
    id: int
    phases: int
    operative: bool = True
    pending_inoperative: bool = False
    ev: EV | None = None
    session: EVSession | None = None
    tx: Transaction | None = None
    current_a: float = 0.0  # signed per-phase current the car takes
    phases_used: int = 0
    offered_a: float = 0.0
    reported_offer_a: float = 0.0
    import_wh: float = 0.0
    export_wh: float = 0.0
    next_meter_at: datetime | None = None
    restart_after_reset: bool = False
    operation_mode: str = CHARGING_ONLY  # the OCPP 2.1 operation mode in force
    upcoming: deque[EVSession] = field(default_factory=deque)

    @property
    def power_w(self) -> float:
        return self.current_a * self.phases_used * VOLTAGE_V

    @property
    def status(self) -> str:
        if self.ev is not None:
            return "Occupied"
        if not self.operative:
            return "Unavailable"
        return "Available"


class StationCore:
    """One station's logic. Not thread-safe; everything runs on the event loop (or a test)."""

    def __init__(self, station_id: str, model: StationModel, clock: Clock,
                 sessions: list[EVSession] | tuple[EVSession, ...] = ()) -> None:
        from simulators.versions import (
            dialect_for,  # the version layers import this module
        )

        self.station_id = station_id
        self.model = model
        self.clock = clock
        self.evses: dict[int, Evse] = {i: Evse(i, model.phases) for i in range(1, model.evse_count + 1)}
        self.device = DeviceModel(model)
        self.meter_interval_s = float(model.meter_interval_s)
        self.limit_change_significance = model.limit_change_significance
        self.device.on_set("SampledDataCtrlr", "TxUpdatedInterval", self._set_meter_interval)
        self.device.on_set("SmartChargingCtrlr", "LimitChangeSignificance", self._set_significance)
        self.outbox: deque[Outgoing] = deque()
        self.online = False
        self.last = clock.now()
        self.counters: Counter[str] = Counter()
        self.on_reset: Callable[[str], None] | None = None  # set by the network layer
        self.on_outbox: Callable[[], None] | None = None
        self._reset_on_idle = False
        self._tx_ids = itertools.count(1)
        self.dialect: Dialect = dialect_for(self)
        self.profiles = ProfileStore(model, list(self.evses), self.dialect.profile_rules())
        for session in sorted(sessions, key=lambda s: s.arrival):
            if session.evse_id not in self.evses:
                raise ValueError(f"session for unknown evse {session.evse_id} on {station_id}")
            self.evses[session.evse_id].upcoming.append(session)

    # ------------------------------------------------------------------ public read-outs

    @property
    def power_w(self) -> dict[int, float]:
        """Signed power per EVSE in W (negative = discharging into the grid)."""
        return {evse_id: evse.power_w for evse_id, evse in self.evses.items()}

    @property
    def total_power_w(self) -> float:
        return sum(evse.power_w for evse in self.evses.values())

    @property
    def net_energy_wh(self) -> float:
        return sum(evse.import_wh - evse.export_wh for evse in self.evses.values())

    def charging_state(self, evse_id: int) -> str | None:
        tx = self.evses[evse_id].tx
        return tx.charging_state if tx else None

    def transaction_id(self, evse_id: int) -> str | None:
        """The station's own id of the running transaction (OCPP 1.6: see `dialect.transaction_id`)."""
        tx = self.evses[evse_id].tx
        return tx.id if tx else None

    def has_activity(self) -> bool:
        return any(e.ev is not None or e.tx is not None for e in self.evses.values()) or bool(self.profiles.pending)

    # ------------------------------------------------------------------ boot / status

    def boot_payload(self, reason: str) -> dict:
        return self.dialect.boot_payload(reason)

    def on_boot_accepted(self, reason: str | None = None) -> None:
        """After (re)boot: report every connector first, then restart sessions a reset ended."""
        now = self.clock.now()
        self.dialect.after_boot(now, reason)
        for evse in self.evses.values():
            if evse.ev is not None and evse.tx is None and evse.restart_after_reset:
                self._start_transaction(evse, now, "CablePluggedIn")

    def _send_status(self, evse: Evse, now: datetime) -> None:
        if self.online:
            self.dialect.connector_status(evse, now)

    # ------------------------------------------------------------------ sessions

    def plug_in(self, evse_id: int, ev: EV | EVSession) -> None:
        """An EV arrives. Starts a transaction (TxStartPoint EVConnected) and authorizes it."""
        evse = self._evse(evse_id)
        if evse.ev is not None:
            raise ValueError(f"evse {evse_id} of {self.station_id} already has an EV plugged in")
        if not evse.operative:
            raise ValueError(f"evse {evse_id} of {self.station_id} is unavailable")
        self._plug_in(evse, ev, self.advance(self.clock.now()))
        self._wake()

    def _plug_in(self, evse: Evse, ev: EV | EVSession, now: datetime) -> None:
        session = ev if isinstance(ev, EVSession) else None
        evse.ev = EV.from_session(ev) if isinstance(ev, EVSession) else ev
        evse.session = session
        self.counters["sessions_started"] += 1
        self._send_status(evse, now)
        if evse.tx is None:
            self._start_transaction(evse, now, "CablePluggedIn")
        else:  # remotely started before the cable was connected
            evse.tx.charging_state = EV_CONNECTED
            self._tx_event(evse, "Updated", "CablePluggedIn", now)
        self.dialect.ev_connected(evse, now)
        self._evaluate(evse, now)

    def unplug(self, evse_id: int) -> None:
        """The EV leaves: the transaction ends (EVDisconnected) and the connector is free again."""
        evse = self._evse(evse_id)
        self._unplug(evse, self.advance(self.clock.now()))
        self._wake()

    def _unplug(self, evse: Evse, now: datetime) -> None:
        if evse.ev is None:
            return
        self._set_current(evse, 0.0, 0, 0.0)
        if evse.tx is not None:
            evse.tx.charging_state = IDLE
            self._end_transaction(evse, now, "EVCommunicationLost", "EVDisconnected")
        evse.ev = None
        evse.session = None
        if evse.pending_inoperative:
            evse.operative, evse.pending_inoperative = False, False
        self._send_status(evse, now)

    def _new_tx_id(self, evse: Evse) -> str:
        return f"{self.station_id}-{evse.id}-{next(self._tx_ids)}"

    def _start_transaction(self, evse: Evse, now: datetime, trigger: str, *, id_token: dict | None = None,
                           remote_start_id: int | None = None, tx_id: str | None = None) -> Transaction:
        evse.restart_after_reset = False
        # whole seconds (a station RTC): Relative profiles then have whole-second period boundaries
        tx = Transaction(id=tx_id or self._new_tx_id(evse), started_at=now.replace(microsecond=0),
                         charging_state=EV_CONNECTED if evse.ev is not None else IDLE,
                         remote_start_id=remote_start_id, start_import_wh=evse.import_wh)
        evse.tx = tx
        evse.next_meter_at = now + timedelta(seconds=self.meter_interval_s)
        tx.authorized = id_token is not None or not self.model.authorize
        tx.id_token = id_token
        self._tx_event(evse, "Started", trigger, tx.started_at, context="Transaction.Begin", id_token=id_token)
        if not tx.authorized and evse.ev is not None:
            self._authorize(evse, now)
        return tx

    def _end_transaction(self, evse: Evse, now: datetime, trigger: str, stopped_reason: str) -> None:
        tx = evse.tx
        assert tx is not None
        self._tx_event(evse, "Ended", trigger, now, context="Transaction.End", stopped_reason=stopped_reason)
        self.profiles.clear_transaction(tx.id)
        evse.tx = None
        evse.next_meter_at = None
        evse.offered_a = evse.reported_offer_a = 0.0
        evse.operation_mode = CHARGING_ONLY

    def _authorize(self, evse: Evse, now: datetime) -> None:
        assert evse.ev is not None
        token = {"idToken": evse.ev.id_token[:36], "type": "ISO14443"}
        tx = evse.tx

        def done(status: str | None) -> None:
            if evse.tx is not tx or tx is None or tx.authorized:
                return
            at = self.advance(self.clock.now())
            if (status or "Accepted") == "Accepted":  # a failed call = authorize offline (LocalAuthorizeOffline)
                self._authorized(evse, token, at)
            else:
                self.counters["authorize_rejected"] += 1
                self._end_transaction(evse, at, "Deauthorized", "DeAuthorized")
            self._wake()

        if self.online:
            self.dialect.authorize(token, done)
        else:
            done(None)

    def _authorized(self, evse: Evse, token: dict, now: datetime) -> None:
        assert evse.tx is not None
        evse.tx.authorized, evse.tx.id_token = True, token
        self._tx_event(evse, "Updated", "Authorized", now, id_token=token)
        self._evaluate(evse, now)

    # ------------------------------------------------------------------ time

    def advance(self, now: datetime) -> datetime:
        """Bring the simulation to `now`, stepping exactly through every event in between."""
        for _ in range(_MAX_STEPS_PER_ADVANCE):
            if now <= self.last:
                break
            step_to = min(now, self._next_event_after(self.last) or now)
            self._step(step_to)
        return self.last

    def _step(self, t: datetime) -> None:
        dt = (t - self.last).total_seconds()
        for evse in self.evses.values():
            if evse.ev is not None and evse.current_a != 0.0:
                wh = evse.ev.integrate(evse.current_a, evse.phases_used, dt)
                if wh >= 0:
                    evse.import_wh += wh
                else:
                    evse.export_wh -= wh
        self.last = t
        self._due(t)

    def _due(self, now: datetime) -> None:
        for evse in self.evses.values():
            if evse.ev is not None and evse.ev.departure is not None and evse.ev.departure <= now:
                self._unplug(evse, now)
            while evse.upcoming and evse.ev is None and evse.upcoming[0].arrival <= now:
                session = evse.upcoming.popleft()
                if session.departure <= now or not evse.operative:
                    self.counters["sessions_missed"] += 1
                    continue
                self._plug_in(evse, session, now)
        self.profiles.promote(now)
        for evse in self.evses.values():
            self._evaluate(evse, now)
            if evse.tx is not None and evse.next_meter_at is not None and evse.next_meter_at <= now:
                self._tx_event(evse, "Updated", "MeterValuePeriodic", now, context="Sample.Periodic")
                evse.next_meter_at += timedelta(seconds=self.meter_interval_s)
                if evse.next_meter_at <= now:
                    evse.next_meter_at = now + timedelta(seconds=self.meter_interval_s)
        if self._reset_on_idle and not any(e.tx for e in self.evses.values()):
            self._reset_on_idle = False
            self._do_reset("OnIdle")

    def _next_event_after(self, t: datetime) -> datetime | None:
        candidates: list[datetime] = []
        promotion = self.profiles.next_promotion()
        if promotion is not None:
            candidates.append(promotion)
        for evse in self.evses.values():
            if evse.ev is not None and evse.ev.departure is not None:
                candidates.append(evse.ev.departure)
            if evse.ev is None and evse.upcoming:
                candidates.append(evse.upcoming[0].arrival)
            if evse.next_meter_at is not None:
                candidates.append(evse.next_meter_at)
            if evse.tx is not None and evse.ev is not None:
                change = self.profiles.next_change(evse.id, t, evse.tx.id, evse.tx.started_at)
                if change is not None:
                    candidates.append(change)
        later = [c for c in candidates if c > t]
        return min(later) if later else None

    def next_wake(self) -> float:
        """Simulated seconds until the run loop should step again."""
        now = self.last
        nxt = self._next_event_after(now)
        wait = (nxt - now).total_seconds() if nxt else 3600.0
        if any(e.ev is not None and e.current_a != 0 for e in self.evses.values()):
            wait = min(wait, self.model.tick_s)  # taper and "car is full" need regular looks
        return max(0.001, min(wait, 3600.0))

    def shift_upcoming(self, delta: timedelta) -> None:
        """Move every session that has not arrived yet by `delta` (the fleet re-anchors its timeline)."""
        if not delta:
            return
        for evse in self.evses.values():
            evse.upcoming = deque(_shifted(s, delta) for s in evse.upcoming)

    # ------------------------------------------------------------------ applying the limit

    def _evaluate(self, evse: Evse, now: datetime) -> None:
        tx, ev = evse.tx, evse.ev
        if tx is None or ev is None or not tx.authorized:
            self._set_current(evse, 0.0, 0, 0.0)
            if tx is not None:
                self._set_state(evse, IDLE if ev is None else EV_CONNECTED, now)
            return
        period = self.profiles.target_a(evse.id, now, tx.id, tx.started_at)
        limit = self._offer(evse, period)
        phases = period.number_phases
        if abs(limit) < self.model.min_current_a:
            limit = 0.0  # IEC 61851 cannot signal 0 < I < 6 A: that is a pause
        if self.model.ignores_resumed_limit:
            if limit == 0.0 and tx.charging_state in (CHARGING, SUSPENDED_EV):
                tx.paused_by_station = True
            if tx.paused_by_station:
                limit = 0.0
        current = ev.draw(limit, self.model.min_current_a)
        used = min(phases, ev.model.phases, self.model.phases) if current else 0
        self._set_current(evse, current, used, limit)
        mode = period.operation_mode or CHARGING_ONLY
        mode_changed = evse.operation_mode != mode
        evse.operation_mode = mode
        if current != 0.0:
            state = CHARGING
        elif limit == 0.0:
            state = SUSPENDED_EVSE
        else:
            state = SUSPENDED_EV
        if not self._set_state(evse, state, now) and state == CHARGING:
            self._check_rate_change(evse, now)
        if mode_changed:
            self.dialect.operation_mode_changed(evse, now)

    def _offer(self, evse: Evse, period: Period) -> float:
        """Signed per-phase amps the station offers (negative = discharge) for the period in force.

        OCPP 2.1 CentralSetpoint: the setpoint, already clamped into [dischargeLimit, limit] by the
        composite schedule; Idle: nothing; otherwise (ChargingOnly, every 2.0.1/1.6 profile) the
        limit, which only the 2.0.1 V2G convention lets go below 0.
        """
        cap = self.model.max_current_a
        if period.operation_mode == CENTRAL_SETPOINT and period.setpoint is not None:
            offer = period.setpoint
            if offer < 0 and not (self.dialect.may_discharge(evse)):
                offer = 0.0
        elif period.operation_mode == IDLE_MODE:
            offer = 0.0
        else:
            offer = period.limit
            if offer < 0 and not (self.model.v2g and self.dialect.may_discharge(evse)):
                offer = 0.0
        return max(-cap, min(cap, offer))

    def _set_current(self, evse: Evse, current: float, phases: int, offered: float) -> None:
        evse.current_a, evse.phases_used, evse.offered_a = current, phases, offered

    def _set_state(self, evse: Evse, state: str, now: datetime) -> bool:
        tx = evse.tx
        if tx is None or tx.charging_state == state:
            return False
        tx.charging_state = state
        evse.reported_offer_a = evse.offered_a
        self._tx_event(evse, "Updated", "ChargingStateChanged", now, context="Other")
        return True

    def _check_rate_change(self, evse: Evse, now: datetime) -> None:
        old, new = evse.reported_offer_a, evse.offered_a
        if old == new:
            return
        if abs(new - old) > self.limit_change_significance * max(abs(old), 1e-9):
            evse.reported_offer_a = new
            self._tx_event(evse, "Updated", "ChargingRateChanged", now, context="Other")

    # ------------------------------------------------------------------ messages

    def _tx_event(self, evse: Evse, event_type: str, trigger: str, now: datetime, *, context: str | None = None,
                  id_token: dict | None = None, stopped_reason: str | None = None) -> None:
        """A transaction event happened; the version layer decides which message(s) it becomes."""
        assert evse.tx is not None
        self.dialect.transaction_event(evse, event_type, trigger, now, context=context, id_token=id_token,
                                       stopped_reason=stopped_reason)

    def push(self, item: Outgoing, front: bool = False) -> None:
        """Queue a message for the central system (the version layers' way out)."""
        if not self.online and not item.transactional and item.action != "StatusNotification":
            if item.on_result is not None:
                item.on_result(None)
            return
        if front:
            self.outbox.appendleft(item)
        else:
            self.outbox.append(item)
        if len(self.outbox) > self.model.offline_queue_max:
            self._drop_one()
        if self.on_outbox is not None:
            self.on_outbox()

    _push = push

    def _drop_one(self) -> None:
        """Full queue: give up the oldest periodic meter sample first, never Started/Ended if avoidable."""
        for index, item in enumerate(self.outbox):
            if item.periodic or not item.transactional:
                del self.outbox[index]
                self.counters["queue_dropped"] += 1
                return
        self.outbox.popleft()
        self.counters["queue_dropped"] += 1

    def set_online(self, online: bool) -> None:
        """Going offline drops what only makes sense live; transaction messages stay queued."""
        self.online = online
        if not online:
            dropped = [item for item in self.outbox if not item.transactional]
            self.outbox = deque(item for item in self.outbox if item.transactional)
            for item in dropped:  # callbacks may queue new events: never while iterating the queue
                if item.on_result is not None:
                    item.on_result(None)

    def _wake(self) -> None:
        if self.on_outbox is not None:
            self.on_outbox()

    # ------------------------------------------------------------------ central system requests

    def handle(self, action: str, payload: dict) -> dict:
        """Answer a central system request of this station's OCPP version (camelCase in and out)."""
        return self.dialect.handlers[action](payload)

    # The OCPP 2.0.1 / 2.1 requests by name, as the unit tests and older callers use them.
    def handle_set_charging_profile(self, payload: dict) -> dict:
        return self.handle("SetChargingProfile", payload)

    def handle_clear_charging_profile(self, payload: dict) -> dict:
        return self.handle("ClearChargingProfile", payload)

    def handle_get_charging_profiles(self, payload: dict) -> dict:
        return self.handle("GetChargingProfiles", payload)

    def handle_get_composite_schedule(self, payload: dict) -> dict:
        return self.handle("GetCompositeSchedule", payload)

    def handle_request_start_transaction(self, payload: dict) -> dict:
        return self.handle("RequestStartTransaction", payload)

    def handle_request_stop_transaction(self, payload: dict) -> dict:
        return self.handle("RequestStopTransaction", payload)

    def handle_reset(self, payload: dict) -> dict:
        return self.handle("Reset", payload)

    def handle_change_availability(self, payload: dict) -> dict:
        return self.handle("ChangeAvailability", payload)

    def handle_trigger_message(self, payload: dict) -> dict:
        return self.handle("TriggerMessage", payload)

    def handle_get_variables(self, payload: dict) -> dict:
        return self.handle("GetVariables", payload)

    def handle_set_variables(self, payload: dict) -> dict:
        return self.handle("SetVariables", payload)

    # ------------------------------------------------------------------ neutral operations

    def now(self) -> datetime:
        """Simulated now, with the simulation brought up to it."""
        return self.advance(self.clock.now())

    def install_profile(self, evse_id: int, profile: dict) -> tuple[str, str | None]:
        """SetChargingProfile with a profile in the 2.0.1 form: (status, reason of a rejection)."""
        now = self.now()
        evse = self.evses.get(evse_id)
        active = evse.tx.id if evse is not None and evse.tx is not None else None
        status, reason = self.profiles.set_profile(evse_id, profile, now, active)
        self.counters[f"set_profile_{status.lower()}"] += 1
        if status == "Accepted":
            self._reevaluate(now)
        return status, reason

    def clear_profiles(self, profile_id: int | None, criteria: dict | None) -> int:
        """ClearChargingProfile (2.0.1 criteria names); returns how many were removed."""
        now = self.now()
        removed = self.profiles.clear(profile_id, criteria)
        self._reevaluate(now)
        return removed

    def composite(self, evse_id: int, duration_s: int, unit: str) -> tuple[datetime, list[Period]]:
        """The composite schedule from now (whole seconds) for `duration_s` in `unit`; evse 0 = station cap."""
        now = self.now()
        tx = self.evses[evse_id].tx if evse_id else None
        start = now.replace(microsecond=0)
        periods = self.profiles.schedule(evse_id, start, duration_s, unit, tx.id if tx else None,
                                         tx.started_at if tx else None)
        return start, periods

    def remote_start(self, evse_id: int | None, id_token: dict, profile: dict | None,
                     remote_start_id: int | None = None) -> tuple[Transaction | None, dict | None]:
        """Start a transaction on request; (transaction, None) or (None, statusInfo of the refusal).

        `profile`: a TxProfile in the 2.0.1 form; it is bound to the new transaction.
        """
        now = self.now()
        candidates = [self.evses.get(evse_id)] if evse_id is not None else [
            e for e in self.evses.values() if e.tx is None and e.operative]
        evse = candidates[0] if candidates else None
        if evse is None or evse.tx is not None or not evse.operative:
            return None, {"reasonCode": "NoFreeEvse"}
        future_tx_id = self._new_tx_id(evse)
        if profile is not None:
            if profile.get("chargingProfilePurpose") != "TxProfile":
                return None, {"reasonCode": "NotATxProfile"}
            profile = {**profile, "transactionId": future_tx_id}
            status, reason = self.profiles.set_profile(evse.id, profile, now, future_tx_id)
            if status != "Accepted":
                return None, status_info(reason or "")
        tx = self._start_transaction(evse, now, "RemoteStart", id_token=id_token, remote_start_id=remote_start_id,
                                     tx_id=future_tx_id)
        self._evaluate(evse, now)
        return tx, None

    def stop_transaction(self, transaction_id: str, trigger: str = "RemoteStop", reason: str = "Remote") -> bool:
        """End a running transaction on request (remote stop, de-authorization); False if unknown."""
        now = self.now()
        for evse in self.evses.values():
            if evse.tx is not None and evse.tx.id == transaction_id:
                self._set_current(evse, 0.0, 0, 0.0)
                evse.tx.charging_state = EV_CONNECTED if evse.ev is not None else IDLE
                self._end_transaction(evse, now, trigger, reason)
                self._wake()
                return True
        return False

    def reset(self, kind: str, stopped_reason: str | None = None) -> str:
        """Reset `Immediate` or `OnIdle` (Scheduled while a transaction runs): Accepted / Scheduled."""
        if kind == "OnIdle" and any(e.tx for e in self.evses.values()):
            self._reset_on_idle = True
            return "Scheduled"
        self._do_reset(kind, stopped_reason)
        return "Accepted"

    def _do_reset(self, kind: str, stopped_reason: str | None = None) -> None:
        now = self.now()
        reason = stopped_reason or ("ImmediateReset" if kind == "Immediate" else "Reboot")
        for evse in self.evses.values():
            if evse.tx is not None:
                self._set_current(evse, 0.0, 0, 0.0)
                evse.restart_after_reset = evse.ev is not None
                self._end_transaction(evse, now, "ResetCommand", reason)
        self.counters["resets"] += 1
        if self.on_reset is not None:
            self.on_reset(kind)

    def change_availability(self, evse_id: int | None, operative: bool) -> str:
        """ChangeAvailability of one EVSE (None or 0: all); Scheduled while a transaction runs."""
        now = self.now()
        evses = [self.evses[evse_id]] if evse_id else list(self.evses.values())
        scheduled = False
        for evse in evses:
            if not operative and evse.tx is not None:
                evse.pending_inoperative, scheduled = True, True
                continue
            evse.pending_inoperative = False
            if evse.operative != operative:
                evse.operative = operative
                self._send_status(evse, now)
        return "Scheduled" if scheduled else "Accepted"

    def allow_discharge(self, transaction_id: str, allowed: bool) -> bool:
        """OCPP 2.1 NotifyAllowedEnergyTransfer: may this transaction discharge? False if unknown."""
        for evse in self.evses.values():
            if evse.tx is not None and evse.tx.id == transaction_id:
                evse.tx.discharge_allowed = allowed
                self._reevaluate(self.now())
                return True
        return False

    # ------------------------------------------------------------------ helpers

    def _reevaluate(self, now: datetime) -> None:
        for evse in self.evses.values():
            self._evaluate(evse, now)
        self._wake()

    def _evse(self, evse_id: int) -> Evse:
        try:
            return self.evses[evse_id]
        except KeyError:
            raise ValueError(f"{self.station_id} has no evse {evse_id}") from None

    def _set_meter_interval(self, value: str) -> None:
        self.meter_interval_s = max(1.0, float(value))

    def _set_significance(self, value: str) -> None:
        self.limit_change_significance = float(value)


def _shifted(session: EVSession, delta: timedelta) -> EVSession:
    return replace(session, arrival=session.arrival + delta, departure=session.departure + delta)

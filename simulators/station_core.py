"""The charging station's behaviour without any network: state machine, energy, smart charging.

`StationCore` is driven by `advance(now)` on a simulated clock and by the CSMS requests it is
handed as camelCase dicts; everything it wants to tell the central system lands in `outbox`
(`Outgoing` items) for the network layer (`simulators.station`) to send. Unit tests drive it
directly with a `ManualClock`; fleets drive it in real time x speed.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

from profiles.units import VOLTAGE_V, round_down_one_decimal
from simulators.charging_profiles import ProfileStore, status_info
from simulators.clock import Clock
from simulators.device_model import DeviceModel
from simulators.ev import EV, EVSession
from simulators.meter import iso, sample
from simulators.models import StationModel

CHARGING, EV_CONNECTED, SUSPENDED_EV, SUSPENDED_EVSE, IDLE = (
    "Charging", "EVConnected", "SuspendedEV", "SuspendedEVSE", "Idle")
_MAX_STEPS_PER_ADVANCE = 100_000


@dataclass
class Outgoing:
    """A station-initiated CALL waiting to be sent. `on_result(None)` means it failed for good."""

    action: str
    payload: dict
    transactional: bool = False
    on_result: Callable[[dict | None], None] | None = None
    attempts: int = 0


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
        self.station_id = station_id
        self.model = model
        self.clock = clock
        self.evses: dict[int, Evse] = {i: Evse(i, model.phases) for i in range(1, model.evse_count + 1)}
        self.profiles = ProfileStore(model, list(self.evses))
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
        tx = self.evses[evse_id].tx
        return tx.id if tx else None

    def has_activity(self) -> bool:
        return any(e.ev is not None or e.tx is not None for e in self.evses.values()) or bool(self.profiles.pending)

    # ------------------------------------------------------------------ boot / status

    def boot_payload(self, reason: str) -> dict:
        return {"reason": reason, "chargingStation": {
            "model": self.model.name[:20], "vendorName": self.model.vendor[:50],
            "serialNumber": self.station_id[:25], "firmwareVersion": "netbewust-sim-1"}}

    def on_boot_accepted(self) -> None:
        """After (re)boot: report every connector first, then restart sessions a reset ended."""
        now = self.clock.now()
        for evse in self.evses.values():
            self._push(Outgoing("StatusNotification", self._status_payload(evse, now)), front=False)
        for evse in self.evses.values():
            if evse.ev is not None and evse.tx is None and evse.restart_after_reset:
                self._start_transaction(evse, now, "CablePluggedIn")

    def _status_payload(self, evse: Evse, now: datetime) -> dict:
        return {"timestamp": iso(now), "connectorStatus": evse.status, "evseId": evse.id, "connectorId": 1}

    def _send_status(self, evse: Evse, now: datetime) -> None:
        if self.online:
            self._push(Outgoing("StatusNotification", self._status_payload(evse, now)))

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
        if evse.ev.model.iso15118:
            self._notify_ev_charging_needs(evse, now)
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
                         remote_start_id=remote_start_id)
        evse.tx = tx
        evse.next_meter_at = now + timedelta(seconds=self.meter_interval_s)
        self._tx_event(evse, "Started", trigger, tx.started_at, context="Transaction.Begin", id_token=id_token)
        if id_token is not None:
            tx.authorized, tx.id_token = True, id_token
        elif not self.model.authorize:
            tx.authorized = True
        elif evse.ev is not None:
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

    def _authorize(self, evse: Evse, now: datetime) -> None:
        assert evse.ev is not None
        token = {"idToken": evse.ev.id_token[:36], "type": "ISO14443"}
        tx = evse.tx

        def done(result: dict | None) -> None:
            if evse.tx is not tx or tx is None or tx.authorized:
                return
            at = self.advance(self.clock.now())
            status = (result or {}).get("idTokenInfo", {}).get("status", "Accepted") if result else "Accepted"
            if status == "Accepted":  # a failed call = authorize offline (LocalAuthorizeOffline)
                self._authorized(evse, token, at)
            else:
                self.counters["authorize_rejected"] += 1
                self._end_transaction(evse, at, "Deauthorized", "DeAuthorized")
            self._wake()

        if self.online:
            self._push(Outgoing("Authorize", {"idToken": token}, on_result=done))
        else:
            done(None)

    def _authorized(self, evse: Evse, token: dict, now: datetime) -> None:
        assert evse.tx is not None
        evse.tx.authorized, evse.tx.id_token = True, token
        self._tx_event(evse, "Updated", "Authorized", now, id_token=token)
        self._evaluate(evse, now)

    def _notify_ev_charging_needs(self, evse: Evse, now: datetime) -> None:
        ev = evse.ev
        assert ev is not None
        m = ev.model
        needs: dict[str, Any] = {
            "requestedEnergyTransfer": "AC_three_phase" if m.phases == 3 else "AC_single_phase",
            "acChargingParameters": {
                "energyAmount": int(ev.energy_need_kwh * 1000), "evMinCurrent": int(m.min_current_a),
                "evMaxCurrent": int(m.max_current_a), "evMaxVoltage": int(m.max_voltage_v)},
        }
        if ev.departure is not None:
            needs["departureTime"] = iso(ev.departure)
        if m.bidirectional:  # 2.0.1 has no V2X fields: carried in customData with 2.1 names
            needs["customData"] = {
                "vendorId": "org.netbewust.v2x", "evMaxDischargePower": m.max_discharge_w,
                "evMinV2XEnergyRequest": round((ev.min_soc - ev.soc) * ev.battery_wh),
                "evMaxV2XEnergyRequest": round((ev.target_soc - ev.soc) * ev.battery_wh)}
        self._push(Outgoing("NotifyEVChargingNeeds", {"evseId": evse.id, "chargingNeeds": needs}))

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

    # ------------------------------------------------------------------ applying the limit

    def _evaluate(self, evse: Evse, now: datetime) -> None:
        tx, ev = evse.tx, evse.ev
        if tx is None or ev is None or not tx.authorized:
            self._set_current(evse, 0.0, 0, 0.0)
            if tx is not None:
                self._set_state(evse, IDLE if ev is None else EV_CONNECTED, now)
            return
        limit, phases = self.profiles.limit_a(evse.id, now, tx.id, tx.started_at)
        limit = max(-self.model.max_current_a, min(self.model.max_current_a, limit))
        if not self.model.v2g:
            limit = max(0.0, limit)
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
        if current != 0.0:
            state = CHARGING
        elif limit == 0.0:
            state = SUSPENDED_EVSE
        else:
            state = SUSPENDED_EV
        if not self._set_state(evse, state, now) and state == CHARGING:
            self._check_rate_change(evse, now)

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

    def _sample(self, evse: Evse, now: datetime, context: str) -> dict:
        return sample(at=now, context=context, import_wh=evse.import_wh, export_wh=evse.export_wh,
                      current_a=evse.current_a, phases_used=evse.phases_used, station_phases=self.model.phases,
                      offered_a=evse.offered_a, soc=evse.ev.soc if evse.ev else None,
                      export_capable=self.model.v2g)

    def _tx_event(self, evse: Evse, event_type: str, trigger: str, now: datetime, *, context: str | None = None,
                  id_token: dict | None = None, stopped_reason: str | None = None) -> None:
        tx = evse.tx
        assert tx is not None
        info: dict[str, Any] = {"transactionId": tx.id, "chargingState": tx.charging_state}
        if tx.remote_start_id is not None and tx.seq_no == 0:
            info["remoteStartId"] = tx.remote_start_id
        if stopped_reason is not None:
            info["stoppedReason"] = stopped_reason
        payload: dict[str, Any] = {
            "eventType": event_type, "timestamp": iso(now), "triggerReason": trigger, "seqNo": tx.next_seq(),
            "transactionInfo": info, "evse": {"id": evse.id, "connectorId": 1}}
        if id_token is not None:
            payload["idToken"] = id_token
        if context is not None:
            payload["meterValue"] = [self._sample(evse, now, context)]
        if not self.online:
            payload["offline"] = True
        self._push(Outgoing("TransactionEvent", payload, transactional=True))

    def _push(self, item: Outgoing, front: bool = False) -> None:
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

    def _drop_one(self) -> None:
        """Full queue: give up the oldest periodic meter sample first, never Started/Ended if avoidable."""
        for index, item in enumerate(self.outbox):
            if item.payload.get("triggerReason") == "MeterValuePeriodic" or not item.transactional:
                del self.outbox[index]
                self.counters["queue_dropped"] += 1
                return
        self.outbox.popleft()
        self.counters["queue_dropped"] += 1

    def set_online(self, online: bool) -> None:
        """Going offline drops what only makes sense live; TransactionEvents stay queued."""
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

    # ------------------------------------------------------------------ CSMS requests

    def handle_set_charging_profile(self, payload: dict) -> dict:
        now = self.advance(self.clock.now())
        evse_id, profile = payload["evseId"], payload["chargingProfile"]
        evse = self.evses.get(evse_id)
        active = evse.tx.id if evse is not None and evse.tx is not None else None
        status, reason = self.profiles.set_profile(evse_id, profile, now, active)
        self.counters[f"set_profile_{status.lower()}"] += 1
        if status == "Accepted":
            self._reevaluate(now)
            return {"status": "Accepted"}
        return {"status": status, "statusInfo": status_info(reason or "")}

    def handle_clear_charging_profile(self, payload: dict) -> dict:
        now = self.advance(self.clock.now())
        removed = self.profiles.clear(payload.get("chargingProfileId"), payload.get("chargingProfileCriteria"))
        self._reevaluate(now)
        return {"status": "Accepted" if removed else "Unknown"}

    def handle_get_charging_profiles(self, payload: dict) -> dict:
        found = self.profiles.query(payload.get("evseId"), payload.get("chargingProfile", {}))
        if not found:
            return {"status": "NoProfiles"}
        groups = sorted(found.items())
        for index, (evse_id, profiles) in enumerate(groups):
            report = {"requestId": payload["requestId"], "chargingLimitSource": "CSO", "evseId": evse_id,
                      "chargingProfile": profiles}
            if index < len(groups) - 1:
                report["tbc"] = True
            self._push(Outgoing("ReportChargingProfiles", report))
        return {"status": "Accepted"}

    def handle_get_composite_schedule(self, payload: dict) -> dict:
        now = self.advance(self.clock.now())
        evse_id, duration = payload["evseId"], int(payload["duration"])
        unit = payload.get("chargingRateUnit", self.model.rate_units[0])
        if evse_id != 0 and evse_id not in self.evses:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEvse"}}
        if unit not in self.model.rate_units:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnsupportedRateUnit"}}
        if duration <= 0:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "InvalidDuration"}}
        tx = self.evses[evse_id].tx if evse_id else None
        start = now.replace(microsecond=0)
        periods = self.profiles.schedule(evse_id, start, duration, unit, tx.id if tx else None,
                                         tx.started_at if tx else None)
        return {"status": "Accepted", "schedule": {
            "evseId": evse_id, "duration": duration, "scheduleStart": iso(start), "chargingRateUnit": unit,
            "chargingSchedulePeriod": [
                {"startPeriod": int((p.start - start).total_seconds()), "limit": round_down_one_decimal(p.limit),
                 "numberPhases": p.number_phases} for p in periods]}}

    def handle_request_start_transaction(self, payload: dict) -> dict:
        now = self.advance(self.clock.now())
        evse_id = payload.get("evseId")
        candidates = [self.evses.get(evse_id)] if evse_id is not None else [
            e for e in self.evses.values() if e.tx is None and e.operative]
        evse = candidates[0] if candidates else None
        if evse is None or evse.tx is not None or not evse.operative:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "NoFreeEvse"}}
        profile = payload.get("chargingProfile")
        future_tx_id = self._new_tx_id(evse)
        if profile is not None:
            if profile.get("chargingProfilePurpose") != "TxProfile":
                return {"status": "Rejected", "statusInfo": {"reasonCode": "NotATxProfile"}}
            profile = {**profile, "transactionId": future_tx_id}
            status, reason = self.profiles.set_profile(evse.id, profile, now, future_tx_id)
            if status != "Accepted":
                return {"status": "Rejected", "statusInfo": status_info(reason or "")}
        token = payload["idToken"]
        tx = self._start_transaction(evse, now, "RemoteStart", id_token=token,
                                     remote_start_id=payload.get("remoteStartId"), tx_id=future_tx_id)
        self._evaluate(evse, now)
        return {"status": "Accepted", "transactionId": tx.id}

    def handle_request_stop_transaction(self, payload: dict) -> dict:
        now = self.advance(self.clock.now())
        for evse in self.evses.values():
            if evse.tx is not None and evse.tx.id == payload["transactionId"]:
                self._set_current(evse, 0.0, 0, 0.0)
                evse.tx.charging_state = EV_CONNECTED if evse.ev is not None else IDLE
                self._end_transaction(evse, now, "RemoteStop", "Remote")
                return {"status": "Accepted"}
        return {"status": "Rejected"}

    def handle_reset(self, payload: dict) -> dict:
        if payload.get("evseId") is not None:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "EvseResetNotSupported"}}
        if payload["type"] == "OnIdle" and any(e.tx for e in self.evses.values()):
            self._reset_on_idle = True
            return {"status": "Scheduled"}
        self._do_reset(payload["type"])
        return {"status": "Accepted"}

    def _do_reset(self, kind: str) -> None:
        now = self.advance(self.clock.now())
        for evse in self.evses.values():
            if evse.tx is not None:
                self._set_current(evse, 0.0, 0, 0.0)
                evse.restart_after_reset = evse.ev is not None
                self._end_transaction(evse, now, "ResetCommand",
                                      "ImmediateReset" if kind == "Immediate" else "Reboot")
        self.counters["resets"] += 1
        if self.on_reset is not None:
            self.on_reset(kind)

    def handle_change_availability(self, payload: dict) -> dict:
        now = self.advance(self.clock.now())
        target = payload.get("evse")
        if target is not None and target.get("id", 0) != 0 and target["id"] not in self.evses:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEvse"}}
        evses = [self.evses[target["id"]]] if target and target.get("id") else list(self.evses.values())
        operative = payload["operationalStatus"] == "Operative"
        scheduled = False
        for evse in evses:
            if not operative and evse.tx is not None:
                evse.pending_inoperative, scheduled = True, True
                continue
            evse.pending_inoperative = False
            if evse.operative != operative:
                evse.operative = operative
                self._send_status(evse, now)
        return {"status": "Scheduled" if scheduled else "Accepted"}

    def handle_trigger_message(self, payload: dict) -> dict:
        now = self.advance(self.clock.now())
        what = payload["requestedMessage"]
        evse_id = (payload.get("evse") or {}).get("id")
        if evse_id is not None and evse_id not in self.evses:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEvse"}}
        evses = [self.evses[evse_id]] if evse_id else list(self.evses.values())
        if what == "BootNotification":
            self._push(Outgoing("BootNotification", self.boot_payload("Triggered")))
        elif what == "Heartbeat":
            self._push(Outgoing("Heartbeat", {}))
        elif what == "StatusNotification":
            for evse in evses:
                self._push(Outgoing("StatusNotification", self._status_payload(evse, now)))
        elif what == "MeterValues":
            for evse in evses:
                self._push(Outgoing("MeterValues", {"evseId": evse.id,
                                                    "meterValue": [self._sample(evse, now, "Trigger")]}))
        elif what == "TransactionEvent":
            with_tx = [evse for evse in evses if evse.tx is not None]
            if not with_tx:
                return {"status": "Rejected", "statusInfo": {"reasonCode": "NoTransaction"}}
            for evse in with_tx:
                self._tx_event(evse, "Updated", "Trigger", now, context="Trigger")
        else:
            return {"status": "NotImplemented"}
        return {"status": "Accepted"}

    def handle_get_variables(self, payload: dict) -> dict:
        return {"getVariableResult": [self.device.get(item) for item in payload["getVariableData"]]}

    def handle_set_variables(self, payload: dict) -> dict:
        return {"setVariableResult": [self.device.set(item) for item in payload["setVariableData"]]}

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

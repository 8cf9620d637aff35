"""What the grid hears: bus events turned into its picture of stations and sessions.

Synchronous and cheap (it sits on the per-message path): each event updates the session book,
runs the verifier where a reading or a state change calls for it, starts a station's setup, and
tells the controller what needs a re-plan or a cut. Dispatch is by event type.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from csms.domain import vehicles
from csms.domain.events import (
    ChargingProfilesReported,
    EvChargingNeeds,
    Event,
    LimitChanged,
    MeterValuesReceived,
    SafeModeChanged,
    SignalRejected,
    StationBooted,
    StationConnected,
    StationDisconnected,
    StationMonitoringEvent,
    TransactionChanged,
)
from csms.grid.config import GridConfig
from csms.grid.control import GridController
from csms.grid.effects.memory import NEED, GridMemory, need_key
from csms.grid.effects.pusher import Pusher
from csms.grid.effects.setup import StationSetup
from csms.grid.effects.verify import Verification
from csms.grid.journal import Journal
from csms.grid.model.sessions import Session, SessionBook
from csms.grid.records import GridRecords
from csms.interfaces import Bus, Clock, Spawner
from csms.protocol.version import ProtocolVersion
from csms.store.base import TransactionStore
from profiles.units import VOLTAGE_V

log = logging.getLogger("csms.grid")
SCALARS = (int, float, str, bool, type(None))
GRID_WIDE = (LimitChanged, SafeModeChanged, SignalRejected)  # events without a station


class Versioned(Protocol):
    """A connected station as the grid needs it when it starts: the OCPP version it speaks."""

    @property
    def version(self) -> ProtocolVersion: ...


class Observer:
    def __init__(self, grid: GridConfig, book: SessionBook, setup: StationSetup, pusher: Pusher,
                 verification: Verification, controller: GridController, journal: Journal, clock: Clock,
                 transactions: TransactionStore | None = None, spawner: Spawner | None = None,
                 memory: GridMemory | None = None, records: GridRecords | None = None) -> None:
        self.grid = grid
        self.records = records  # ended sessions kept for the report
        self.transactions = transactions  # to place an Updated without evse the store knows about
        self.spawner = spawner
        self.memory = memory
        self._looking_up: set[tuple[str, str]] = set()
        self.book = book
        self.setup = setup
        self.pusher = pusher
        self.verification = verification
        self.controller = controller
        self.journal = journal
        self.clock = clock
        self._unsubscribe: Callable[[], None] | None = None
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            LimitChanged: self._limit, SafeModeChanged: self._limit, SignalRejected: self._signal_rejected,
            StationConnected: self._connected, StationDisconnected: self._disconnected,
            StationBooted: self._booted, TransactionChanged: self._transaction,
            MeterValuesReceived: self._meter_values, EvChargingNeeds: self._ev_needs,
            ChargingProfilesReported: self.setup.reported, StationMonitoringEvent: self._device_events,
        }

    def attach(self, bus: Bus, connected: Mapping[str, Versioned]) -> None:
        """Listen to ``bus``; ``connected``: stations that connected before the grid started."""
        self._unsubscribe = bus.subscribe(self.on_event)
        for station_id, link in list(connected.items()):
            st = self.book.station(station_id)
            st.connected, st.ocpp_version = True, link.version.subprotocol
            self.setup.ensure(station_id)

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def on_event(self, ev: Event) -> None:
        handler = self._handlers.get(type(ev))
        if handler is not None and (ev.station_id is not None or isinstance(ev, GRID_WIDE)):
            handler(ev)

    # Grid signals ----------------------------------------------------------------------------
    def _limit(self, ev: LimitChanged | SafeModeChanged) -> None:
        tid = ev.transformer_id if ev.transformer_id in self.grid.transformers else None
        self.journal.record("limit", **{**_scalars(ev.data()), "transformer": tid, "event": ev.kind})
        self.controller.limit_changed(tid, ev.kind)

    def _signal_rejected(self, ev: SignalRejected) -> None:
        self.journal.record("signal_rejected", **_scalars(ev.data()))

    # Stations ----------------------------------------------------------------------------------
    def _connected(self, ev: StationConnected) -> None:
        assert ev.station_id is not None
        st = self.book.station(ev.station_id)
        st.connected = True
        st.ocpp_version = ev.subprotocol or st.ocpp_version
        if ev.resumed and (st.ready or st.setup_running):
            # Only the directory lost it for a while (its node's lease lapsed): nothing to ask again.
            # Asking 5,000 stations at once is what kept an overloaded node from renewing its lease.
            self.controller.request("station connected")
            return
        if ev.accepted:
            # Back without booting (a lost link, or our restart): its profiles are still there; ask.
            self.setup.ensure(ev.station_id, force=True, reconcile=True)
        self.controller.request("station connected")

    def _disconnected(self, ev: StationDisconnected) -> None:
        assert ev.station_id is not None
        self.book.station(ev.station_id).connected = False
        self.controller.request("station dropped")

    def _booted(self, ev: StationBooted) -> None:
        assert ev.station_id is not None
        st = self.book.station(ev.station_id)
        st.vendor, st.model, st.connected = ev.vendor, ev.model, True
        if ev.status == "Accepted":
            st.ready = False
            self.pusher.forget(ev.station_id)
            self.setup.forget(ev.station_id)
            self.setup.ensure(ev.station_id, force=True)

    # Sessions ----------------------------------------------------------------------------------
    def _transaction(self, ev: TransactionChanged) -> None:
        sid = ev.station_id
        assert sid is not None
        if ev.event_type == "Ended":
            ended = self.book.ended(sid, ev.transaction_id)
            if ended is not None:
                self.pusher.forget(sid, ended.evse_id)
                if self.records is not None:
                    if ev.reading is not None and ev.reading.energy_wh is not None and ended.energy_wh is not None:
                        ended.energy_wh = max(ended.energy_wh, ev.reading.energy_wh)  # the final register
                    self.records.ended(ended)
                if self.memory is not None and ended.need is not None and ended.need.source == "api":
                    self.memory.delete(NEED, need_key(sid, ended.transaction_id))
                self.controller.request("session ended")
            return
        now = self.clock()
        if not ev.offline:
            self.book.clock_reading(sid, ev.timestamp, now)
        session, change = self.book.transaction(sid, ev, now)
        if session is None:
            if ev.evse_id is None:
                self._place(ev)
            return
        if change == "new":
            self.setup.ensure(sid)
            self.setup.check_transfer(sid, session.evse_id)
            self.controller.request("session started")
        elif change == "state":
            self.verification.report(self.verification.verifier.resume_check(session, now))
        if change == "reading" or ev.reading is not None:
            self._setpoint_now(session, now)
            self.verification.report(self.verification.verifier.reading(session, now))

    def _place(self, ev: TransactionChanged) -> None:
        """An Updated without ``evse`` (OCPP 2.0.1 only requires it on the first event) for a
        transaction we do not know as a session: the store may know its EVSE."""
        key = (ev.station_id or "", ev.transaction_id)
        if self.transactions is None or self.spawner is None or key in self._looking_up:
            return
        self._looking_up.add(key)
        self.spawner.spawn(self._look_up(ev), name=f"grid place {key[0]} {key[1]}")

    async def _look_up(self, ev: TransactionChanged) -> None:
        assert self.transactions is not None and ev.station_id is not None
        try:
            record = await self.transactions.get_transaction(ev.station_id, ev.transaction_id)
        finally:
            self._looking_up.discard((ev.station_id, ev.transaction_id))
        if record is None or not record.active or record.evse_id is None or record.evse_id <= 0:
            log.info("%s: transaction %s without evse, unknown to the store: not planned until it says where",
                     ev.station_id, ev.transaction_id)
            return
        if self.book.find(ev.station_id, ev.transaction_id, None) is None:
            self._transaction(dataclasses.replace(ev, evse_id=record.evse_id))

    def _meter_values(self, ev: MeterValuesReceived) -> None:
        assert ev.station_id is not None
        if ev.reading is not None:
            self.book.clock_reading(ev.station_id, ev.reading.timestamp, self.clock())
        session = self.book.find(ev.station_id, None, ev.evse_id)
        if session is not None and ev.reading is not None:
            now = self.clock()
            self.book.reading(session, ev.reading, now)
            self._setpoint_now(session, now)
            self.verification.report(self.verification.verifier.reading(session, now))

    def _setpoint_now(self, session: Session, now: datetime) -> None:
        """The setpoint in force is what the station's installed schedule says now: when the
        schedule steps (a pause ending, a limit starting), a reading is judged against the new value,
        with the grace a new setpoint gets, not against the value of the last push."""
        offset = self.book.station(session.station_id).clock_offset_s or 0.0
        installed = self.pusher.seen_now(session.key, offset)
        value = None if installed is None else installed.value_at(now)
        if installed is None or value is None or value == session.setpoint_a:
            return
        session.setpoint_a, session.setpoint_since = value, now
        session.setpoint_kw = value * installed.phases * VOLTAGE_V / 1000.0

    def _device_events(self, ev: StationMonitoringEvent) -> None:
        """NotifyEvent: a vehicle id the station reports for the car on an EVSE (ConnectedEV.VehicleId)."""
        assert ev.station_id is not None
        for item in ev.events if isinstance(ev.events, list) else ():
            found = vehicles.from_notify_event(item) if isinstance(item, dict) else None
            if found is None:
                continue
            session = self.book.sessions.get((ev.station_id, found[0]))
            if session is not None and found[1] not in session.vehicle_ids:
                session.add_vehicle_ids((found[1],))
                self.controller.request("vehicle identified")

    def _ev_needs(self, ev: EvChargingNeeds) -> None:
        assert ev.station_id is not None
        self.book.ev_needs(ev.station_id, ev.evse_id, ev.needs, self.clock())
        self.setup.ev_needs(ev.station_id, ev.evse_id, ev.needs)
        self.controller.request("EV needs")


def _scalars(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if isinstance(v, SCALARS)}

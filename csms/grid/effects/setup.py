"""Getting a station ready for control: read what it accepts in SetChargingProfile (or take it from
a configured model rule), find out what it already holds, and install the conservative fail-safe
TxDefaultProfile unless it has it.

A station that comes back without booting (after a lost link, or after our own restart) still runs
the profiles it had: it is asked (GetChargingProfiles) and its TxProfiles become what its sessions
have installed, so the next plan pushes only what differs. A station that cannot say (refuses,
does not answer in time) is treated as holding nothing: every session gets its plan again. One
whose set-up is remembered from this boot is steerable while it is asked, on what it held when it
left; its answer then corrects that, except for a session sent a profile since the question.

What a set-up learnt (the GetVariables answers) and installed (the fail-safe) is kept in the store
with the boot it was learnt in: a new grid leader, or the daemon after a restart, takes it as it is
for every station that has not booted since instead of asking again; with 10,000 stations that is
20,000 calls fewer before the first plan can reach them. A boot forgets it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from csms.domain.events import ChargingProfilesReported
from csms.domain.records import StationRecord
from csms.grid.config import GridConfig
from csms.grid.effects.memory import SETUP, GridMemory
from csms.grid.effects.pusher import TX_PROFILE_ID_BASE, Pusher, failsafe_profile
from csms.grid.journal import Journal
from csms.grid.model.sessions import SessionBook, StationCaps
from csms.interfaces import Clock, GridCommands, Spawner
from csms.store.base import StationStore
from profiles.installed import setpoints_from_profile

log = logging.getLogger("csms.grid")

SMART_CHARGING_VARIABLES = ("RateUnit", "ProfileStackLevel", "PeriodsPerSchedule")
V2X_VARIABLES = ("SupportedOperationModes", "SupportedEnergyTransferModes")  # OCPP 2.1 V2XChargingCtrlr
#: Versions whose schedule periods carry an operationMode (V2X as CentralSetpoint, not a negative limit).
OPERATION_MODE_VERSIONS = frozenset({"ocpp2.1"})
BIDIRECTIONAL_TRANSFERS = frozenset({"AC_BPT", "AC_BPT_DER", "DC_BPT", "DC_ACDP_BPT"})
#: The charge-only transfer of the same kind, for a car that offers no other.
CHARGE_ONLY = {"AC_BPT": "AC_three_phase", "AC_BPT_DER": "AC_DER", "DC_BPT": "DC", "DC_ACDP_BPT": "DC_ACDP"}
REPORT_WAIT_S = 5.0  # for the ReportChargingProfiles that follow an Accepted GetChargingProfiles


@dataclass
class _Report:
    profiles: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class StationSetup:
    def __init__(self, grid: GridConfig, book: SessionBook, commands: GridCommands, spawner: Spawner,
                 journal: Journal, ready: Callable[[str], None], pusher: Pusher | None = None,
                 clock: Clock | None = None, memory: GridMemory | None = None,
                 stations: StationStore | None = None) -> None:
        self.grid = grid
        self.book = book
        self.commands = commands
        self.spawner = spawner
        self.journal = journal
        self.ready = ready  # called with a reason once a station is set up (it can be planned for now)
        self.pusher = pusher
        self.clock = clock
        self._reports: dict[tuple[str, int], _Report] = {}
        self._request_ids = itertools.count(1)
        self._charge_only: dict[tuple[str, int], list[str]] = {}  # bidirectional requests to answer
        self.memory = memory
        self.stations = stations  # each station's last boot: what a remembered set-up is valid for
        self._known: dict[str, dict[str, Any]] = {}  # station -> {"boot", "variables", "failsafe"}

    async def load(self, listed: list[StationRecord] | None = None) -> int:
        """The set-ups remembered in the store, kept for the stations that have not booted since;
        ``listed``: the stations as just listed (a new leader lists 30,000 once, not per part)."""
        if self.memory is None or self.stations is None:
            return 0
        remembered = await self.memory.load(SETUP)
        if remembered:
            records = listed if listed is not None else await self.stations.list_stations()
            boots = {r.station_id: _boot_mark(r.last_boot) for r in records}
            self._known = {sid: rec for sid, rec in remembered.items()
                           if sid in boots and rec.get("boot") == boots[sid] and isinstance(rec.get("variables"), list)}
        return len(self._known)

    def forget(self, station_id: str) -> None:
        """The station booted: what it was told and what it said before may no longer hold."""
        if self._known.pop(station_id, None) is not None and self.memory is not None:
            self.memory.delete(SETUP, station_id)

    async def _boot_of(self, station_id: str) -> str | None:
        if self.stations is None or self.memory is None:
            return None
        try:
            record = await self.stations.get_station(station_id)
        except Exception as exc:  # noqa: BLE001 - not remembered this time; set up all the same
            log.info("%s: boot not read (%s); its set-up is not remembered", station_id, exc)
            return None
        return _boot_mark(record.last_boot if record is not None else None)

    def _remember(self, station_id: str, boot: str, variables: list[dict[str, Any]], failsafe: dict[str, Any]) -> None:
        record = {"boot": boot, "variables": variables, "failsafe": failsafe}
        self._known[station_id] = record
        if self.memory is not None:
            self.memory.put(SETUP, station_id, record)

    def ensure(self, station_id: str, force: bool = False, reconcile: bool = False) -> None:
        """Set the station up in the background unless it is ready (or being set up); ``reconcile``:
        it came back without booting, so ask it what it still holds."""
        st = self.book.station(station_id)
        if st.setup_running:
            if force:  # e.g. it booted while being set up after connecting: what that set-up learns may be stale
                st.setup_again = bool(st.setup_again) or reconcile
            return
        if st.ready and not force:
            return
        st.setup_running = True
        st.ready = False  # nothing goes out to it until it is set up (again)
        self.spawner.spawn(self._setup(station_id, reconcile), name=f"grid setup {station_id}")

    def ev_needs(self, station_id: str, evse_id: int, needs: dict[str, Any]) -> None:
        """OCPP 2.1: a car asking for a bidirectional transfer on a station whose discharge we do not
        control (it takes no CentralSetpoint and no rule says ``v2g``) is allowed to charge only
        (NotifyAllowedEnergyTransfer), so nothing discharges outside the plan. Sent once the station
        is set up and the transaction known."""
        key = (station_id, evse_id)
        requested = needs.get("requestedEnergyTransfer")
        if requested not in BIDIRECTIONAL_TRANSFERS:
            self._charge_only.pop(key, None)
            return
        available = [m for m in needs.get("availableEnergyTransfer") or () if isinstance(m, str)]
        self._charge_only[key] = ([m for m in available if m not in BIDIRECTIONAL_TRANSFERS]
                                  or [CHARGE_ONLY[str(requested)]])
        self.check_transfer(station_id, evse_id)

    def check_transfer(self, station_id: str, evse_id: int) -> None:
        """Tell the station what the car on ``evse_id`` may do, if that is pending and can be said now."""
        key = (station_id, evse_id)
        allowed, st, session = self._charge_only.get(key), self.book.station(station_id), self.book.sessions.get(key)
        if allowed is None or session is None or not st.ready:
            return
        del self._charge_only[key]
        if st.ocpp_version in OPERATION_MODE_VERSIONS and not st.caps.v2g:
            self.spawner.spawn(self._allow(station_id, session.transaction_id, allowed),
                               name=f"grid energy transfer {station_id}")

    async def _allow(self, station_id: str, transaction_id: str, allowed: list[str]) -> None:
        notify = getattr(self.commands, "notify_allowed_energy_transfer", None)
        if notify is None:
            return
        try:
            status = str((await notify(station_id, transaction_id, allowed)).get("status"))
        except Exception as exc:  # noqa: BLE001 - refused, offline: the plan never discharges it anyway
            status = type(exc).__name__
        log.info("%s: transaction %s may use %s only (NotifyAllowedEnergyTransfer: %s)", station_id,
                 transaction_id, ", ".join(allowed), status)
        self.journal.record("energy_transfer", station_id=station_id, transaction_id=transaction_id,
                            allowed=allowed, status=status)

    def reported(self, ev: ChargingProfilesReported) -> None:
        """A ReportChargingProfiles answering one of our GetChargingProfiles."""
        waiter = self._reports.get((ev.station_id or "", ev.request_id))
        if waiter is None:
            return
        waiter.profiles.extend((ev.evse_id, profile) for profile in ev.profiles if isinstance(profile, dict))
        if not ev.to_be_continued:
            waiter.done.set()

    async def _held(self, station_id: str) -> list[tuple[int, dict[str, Any]]] | None:
        """Every profile the station holds, by EVSE; None when it cannot tell."""
        request_id = next(self._request_ids)
        waiter = self._reports[(station_id, request_id)] = _Report()
        try:
            get = getattr(self.commands, "get_charging_profiles", None)
            if get is None:
                return None
            response = await get(station_id, request_id)
            status = response.get("status")
            if status == "NoProfiles":
                return []
            if status != "Accepted":
                return None
            async with asyncio.timeout(REPORT_WAIT_S):
                await waiter.done.wait()
            return waiter.profiles
        except Exception as exc:  # noqa: BLE001 - refused, offline, no answer: it cannot tell
            log.info("%s: could not learn which profiles it holds (%s); its sessions get their plans again",
                     station_id, type(exc).__name__)
            return None
        finally:
            self._reports.pop((station_id, request_id), None)

    def _adopt(self, station_id: str, held: list[tuple[int, dict[str, Any]]] | None, asked_at: int = 0) -> int:
        """What each session's station holds becomes what it has installed; returns how many kept one.
        ``asked_at``: the pusher's count of accepted pushes when the station was asked. A session that
        accepted a push since keeps it (the answer may predate it); one with a push on the wire is
        believed to hold nothing unless that push lands (the next plan sends it its schedule)."""
        if self.pusher is None or self.clock is None:
            return 0
        p = self.grid.planning
        now = self.clock()
        kept = 0
        for session in self.book.of_station(station_id):
            key = session.key
            if self.pusher.accepted_as.get(key, 0) > asked_at:
                kept += key in self.pusher.installed
                continue
            if key in self.pusher.in_flight:  # that push decides what it holds; should it not land, nothing is
                self.pusher.doubt(key)        # believed (the next plan sends it its schedule)
                continue
            ours = [profile for evse, profile in held or ()
                    if evse == session.evse_id and profile.get("id") == TX_PROFILE_ID_BASE + session.evse_id
                    and profile.get("transactionId") == session.transaction_id
                    and profile.get("chargingProfilePurpose") == "TxProfile"]
            # Read on the station's clock (offset 0): the pusher moves it onto ours with the
            # station's offset as it learns it.
            sp = None if not ours else setpoints_from_profile(
                ours[-1], station_id=station_id, evse_id=session.evse_id, slot_s=float(p.slot_s),
                horizon_slots=p.horizon_slots, default_phases=self.book.station(station_id).caps.phases,
                now=now + timedelta(seconds=self.book.station(station_id).clock_offset_s or 0.0))
            if sp is None:
                self.pusher.forget(station_id, session.evse_id)
                continue
            self.pusher.adopt(session.key, sp, 0.0)
            kept += 1
        return kept

    async def _setup(self, station_id: str, reconcile: bool = False) -> None:
        st = self.book.station(station_id)
        try:
            known = self._known.get(station_id)
            boot = await self._boot_of(station_id) if known is None else None  # before asking: a boot meanwhile voids it
            vendor_model = f"{st.vendor}/{st.model}" if st.vendor or st.model else None
            rule = self.grid.station_model_for(station_id, vendor_model)
            modes = st.ocpp_version in OPERATION_MODE_VERSIONS
            caps = StationCaps(rate_units=("A",), max_stack_level=0, periods_per_schedule=1, v2g=rule.v2g,
                               phases=rule.phases, max_current_a=rule.max_current_a,
                               min_current_a=rule.min_current_a, source="rule", operation_modes=modes)
            variables = known["variables"] if known is not None else await self._variables(station_id, modes)
            if variables is not None:
                apply_variables(caps, variables)
                if modes:
                    caps.v2g = rule.v2g or can_discharge(variables)
            if rule.rate_unit is not None:
                caps.rate_units = (rule.rate_unit,)
            st.caps = caps
            profile = failsafe_profile(caps, self.grid.planning.fail_safe_limit_a)
            early = reconcile and known is not None and known.get("failsafe") == profile
            if early:
                # Back without booting, set up in this boot: steerable at once, on what it held when
                # it left (read back); what it says it holds adjusts that once its report comes. A
                # stricter limit must not wait for the report (seconds; 3,000 moved stations of a
                # failover waited for a plan beside the first wave).
                st.failsafe_status = "Accepted"
                st.ready = True
                self.ready("station ready")
            asked_at = self.pusher.accepted if self.pusher is not None else 0
            held = await self._held(station_id) if reconcile else None
            kept = self._adopt(station_id, held, asked_at) if reconcile else 0
            # (A station steered early has its fail-safe from this boot: the branches below keep it.)
            if held is not None and any(evse == 0 and p == profile for evse, p in held):
                st.failsafe_status = "Accepted"  # still there: nothing to send
            elif known is not None and known.get("failsafe") == profile:
                st.failsafe_status = "Accepted"  # installed in this boot already
            else:
                try:
                    response = await self.commands.set_charging_profile(station_id, 0, profile)
                    st.failsafe_status = str(response.get("status"))
                except Exception as exc:  # noqa: BLE001
                    st.failsafe_status = type(exc).__name__
            if boot is not None and variables is not None and st.failsafe_status == "Accepted" \
                    and st.setup_again is None:  # not when a boot came meanwhile: it is set up again
                self._remember(station_id, boot, variables, profile)
            st.ready = True
            self.journal.record("station_setup", station_id=station_id, rate_units=list(caps.rate_units),
                                stack_level=caps.max_stack_level, periods=caps.periods_per_schedule, v2g=caps.v2g,
                                operation_modes=caps.operation_modes, recalled=known is not None,
                                caps_source=caps.source, failsafe=st.failsafe_status,
                                reconciled=None if not reconcile else ("unknown" if held is None else kept))
        finally:
            st.setup_running = False
            again, st.setup_again = st.setup_again, None
        if again is not None:
            self.ensure(station_id, force=True, reconcile=again)
            return
        for session in self.book.of_station(station_id):
            self.check_transfer(station_id, session.evse_id)
        self.ready("station ready")

    async def _variables(self, station_id: str, modes: bool) -> list[dict[str, Any]] | None:
        """What the station's device model says about profiles (and V2X); None when it cannot say."""
        items = [{"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": name}}
                 for name in SMART_CHARGING_VARIABLES]
        if modes:
            items += [{"component": {"name": "V2XChargingCtrlr"}, "variable": {"name": name}} for name in V2X_VARIABLES]
        try:
            response = await self.commands.get_variables(station_id, items)
        except Exception as exc:  # noqa: BLE001 - a station without a device model gets the safest shape
            log.info("%s: GetVariables failed (%s); assuming amps, stack level 0, one period", station_id, exc)
            return None
        results = response.get("getVariableResult", [])
        return [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []


def _boot_mark(last_boot: datetime | None) -> str:
    """Which boot a set-up belongs to ("" for a station never seen booting)."""
    return last_boot.isoformat() if last_boot is not None else ""


def can_discharge(results: list[dict[str, Any]]) -> bool:
    """An OCPP 2.1 station's V2XChargingCtrlr says it takes CentralSetpoint and a bidirectional transfer."""
    values = {r["variable"]["name"]: {v.strip() for v in r["attributeValue"].split(",")} for r in results
              if r.get("attributeStatus") == "Accepted" and isinstance(r.get("attributeValue"), str)
              and (r.get("component") or {}).get("name") == "V2XChargingCtrlr"}
    return ("CentralSetpoint" in values.get("SupportedOperationModes", set())
            and bool(values.get("SupportedEnergyTransferModes", set()) & BIDIRECTIONAL_TRANSFERS))


def apply_variables(caps: StationCaps, results: list[dict[str, Any]]) -> None:
    """Fold GetVariables answers into ``caps`` (unparseable values keep the safe defaults)."""
    found = False
    for r in results:
        if r.get("attributeStatus") != "Accepted" or not isinstance(r.get("attributeValue"), str):
            continue
        name, value = r["variable"]["name"], r["attributeValue"]
        if name == "RateUnit":
            units = tuple(u.strip() for u in value.split(",") if u.strip() in ("A", "W"))
            if units:
                caps.rate_units, found = units, True
        elif name in ("ProfileStackLevel", "PeriodsPerSchedule"):
            try:
                number = int(value)
            except ValueError:
                continue
            if number >= (0 if name == "ProfileStackLevel" else 1):
                found = True
                if name == "ProfileStackLevel":
                    caps.max_stack_level = number
                else:
                    caps.periods_per_schedule = number
    if found:
        caps.source = "device-model"

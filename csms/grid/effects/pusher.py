"""Turn planned setpoints into TxProfiles and get them onto the stations.

A TxProfile carries the whole planned schedule, so a station keeps following the plan when its
link drops. The schedule is anchored on the station's own clock (its offset from ours is learnt
from its messages, profiles/station_clock.py) with its first period reaching a minute back, so a
station whose clock is off still runs the plan, not its fail-safe; the immediate cut goes out as a
Relative profile of one period, which holds whatever the station's clock says. Each profile is
shaped for its station: its rate unit, stack level and period count; discharge only where the
station supports V2G: as OCPP 2.1 ``CentralSetpoint`` periods with a negative setpoint in W on a 2.1
station, as a negative limit on a 2.0.1 model flagged ``v2g`` (our opt-in convention). Pushes that would not change anything
meaningful are skipped (hysteresis, decided in profiles/hysteresis.py), so a busy grid does not
flood chargers with SetChargingProfile. All stations are called concurrently, one call per station
at a time (the daemon queues per station anyway).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from csms.grid.model.sessions import StationCaps
from profiles.hysteresis import Hysteresis, Setpoints, keep_within_budget, same_limits
from profiles.planner import SessionPlan
from profiles.profile_builder import MAX_TRANSACTION_ID, Unit, fail_safe_default_profile, tx_profile
from profiles.station_clock import DEFAULT_LEAD_S, anchored, relative
from profiles.units import VOLTAGE_V, round_down_one_decimal

#: Profile ids the controller owns, far from what operators and tools usually pick.
TX_PROFILE_ID_BASE = 770_000
FAILSAFE_PROFILE_ID = 769_999
#: Stack level of our TxProfiles (capped by the station's ProfileStackLevel).
TX_STACK_LEVEL = 1
MIN_OCPP_CURRENT_A = 6.0

SendProfile = Callable[[str, int, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class PushResult:
    station_id: str
    evse_id: int
    transaction_id: str | None
    status: str  # Accepted | Rejected | skipped | <error class name>
    limit_a: float | None
    limit: float | None  # first period's limit on the wire, in ``unit``
    unit: str
    at: datetime
    seconds: float = 0.0
    reason: str | None = None
    sent_at: datetime | None = None  # clock time the call went out (the station may act before we hear back)

    def as_dict(self) -> dict[str, Any]:
        return {"station_id": self.station_id, "evse_id": self.evse_id, "transaction_id": self.transaction_id,
                "status": self.status, "limit_a": self.limit_a, "limit": self.limit, "unit": self.unit,
                "at": self.at.isoformat(), "seconds": round(self.seconds, 4), "reason": self.reason}


@dataclass
class ShapedProfile:
    """A TxProfile and the setpoints it actually carries (after truncation and clamping), on our
    clock; ``offset_s``: the station's clock offset the wire schedule was anchored on."""

    profile: dict[str, Any]
    carried: Setpoints
    unit: str
    offset_s: float = 0.0


def on_station_clock(shaped: ShapedProfile, offset_s: float, lead_s: float = DEFAULT_LEAD_S, *,
                     fresh: bool = False) -> ShapedProfile:
    """The profile anchored on the station's clock (``offset_s``: its clock minus ours); ``fresh``: the
    profile was just shaped and is nobody else's, so it is anchored in place (not copied)."""
    return replace(shaped, profile=anchored(shaped.profile, offset_s, lead_s, in_place=fresh), offset_s=offset_s)


def as_relative(shaped: ShapedProfile, hold_slots: int = 0) -> ShapedProfile:
    """The first period as a Relative profile: it holds until replaced, whatever the station's clock
    (carried over ``hold_slots``, the planning horizon, even when the plan was shorter: a cut)."""
    sp = shaped.carried
    held = replace(sp, current_a=(sp.current_a[0],) * max(len(sp.current_a), hold_slots))
    return ShapedProfile(relative(shaped.profile), held, shaped.unit, shaped.offset_s)


#: A change of a station's clock offset smaller than this is estimation noise (message delays,
#: compressed simulated time), not a clock that moved: the installed schedule is taken as it was.
OFFSET_TOLERANCE_S = 30.0


def as_seen_now(installed: Setpoints, offset_then: float, offset_now: float) -> Setpoints:
    """What an installed schedule does on our clock now, given the station's clock offset when it was
    pushed and now: a clock that moved since (drift, a correction, a simulated clock running fast)
    runs the schedule earlier or later than we planned it."""
    if abs(offset_then - offset_now) < OFFSET_TOLERANCE_S:
        return installed
    return replace(installed, start=installed.start + timedelta(seconds=offset_then - offset_now))


@functools.lru_cache(maxsize=8192)
def _to_wire(amps: float, unit: str, phases: int) -> float:
    """The limit on the wire (cached: planner setpoints sit on a 0.1 A grid, so few values recur)."""
    if unit == "W":
        return round_down_one_decimal(amps * phases * VOLTAGE_V)
    return round_down_one_decimal(amps)


@dataclass(frozen=True)
class _Shape:
    """What every session with the same setpoints and station shape gets (shared, never mutated)."""

    values: tuple[float, ...]  # the setpoints carried after clamping and truncation
    periods: tuple[tuple[tuple[str, Any], ...], ...]  # each period's fields on the wire
    duration: int


@functools.lru_cache(maxsize=4096)
def _shape(current_a: tuple[float, ...], unit: Unit, phases: int, max_periods: int, v2g: bool,
           max_current_a: float, slot_s: float, operation_modes: bool = False) -> _Shape:
    """Clamp, snap and truncate one schedule; built once per distinct schedule (at 10,000
    sessions most share a handful of schedules), by ``profiles.profile_builder.tx_profile``."""
    values = []
    for amps in current_a:
        if amps < 0 and not v2g:
            amps = 0.0
        if 0 < abs(amps) < MIN_OCPP_CURRENT_A:
            amps = 0.0
        values.append(max(-max_current_a, min(max_current_a, amps)))
    end_slot, changes, last = len(values), 0, None
    for index, amps in enumerate(values):
        wire = _to_wire(amps, unit, phases)
        if wire != last:
            changes, last = changes + 1, wire
            if changes > max_periods:
                end_slot = index
                break
    carried = tuple(values[:end_slot])
    plan = SessionPlan(session_id="shape", current_a=carried, power_kw=(), delivered_kwh=0.0, unmet_kwh=0.0,
                       guarantee_unmet_kwh=0.0, reason=None)
    built = tx_profile(plan, profile_id=TX_PROFILE_ID_BASE, stack_level=0, transaction_id="shape",
                       start=_EPOCH, slot_s=slot_s, unit=unit,
                       phases=phases, max_periods=max_periods, allow_negative=v2g, operation_modes=operation_modes)
    periods = tuple(tuple(p.items()) for p in built["chargingSchedule"][0]["chargingSchedulePeriod"])
    return _Shape(carried, periods, max(1, int(slot_s * end_slot)))


_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


@functools.lru_cache(maxsize=64)
def _start_text(start: datetime) -> str:
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC), got a naive datetime")
    utc = start.astimezone(timezone.utc)
    return utc.isoformat(timespec="milliseconds" if utc.microsecond else "seconds").replace("+00:00", "Z")


def shape_tx_profile(sp: Setpoints, caps: StationCaps, stack_level: int = TX_STACK_LEVEL) -> ShapedProfile:
    """A TxProfile for ``sp`` that this station accepts (built by ``profiles.profile_builder``).

    Values in the 0-6 A gap become 0 (IEC 61851 cannot signal them); discharge is clamped to 0 on
    stations not configured for V2G. Beyond ``PeriodsPerSchedule`` changes the schedule is cut
    short with ``duration``, and it always ends with the plan's horizon: after that the station
    falls back to its conservative fail-safe default rather than hold a stale value. The
    controller re-plans long before either happens. The schedule itself is built once per
    distinct shape and copied, so a wave of 10,000 profiles costs a few milliseconds to shape.
    """
    if not isinstance(sp.transaction_id, str) or not 0 < len(sp.transaction_id) <= MAX_TRANSACTION_ID:
        raise ValueError(f"transaction_id must be a string of 1..{MAX_TRANSACTION_ID} characters")
    unit = caps.tx_unit
    shape = _shape(tuple(sp.current_a), unit, sp.phases, max(1, caps.periods_per_schedule), caps.v2g,
                   caps.max_current_a, sp.slot_s, caps.operation_modes)
    profile_id = TX_PROFILE_ID_BASE + sp.evse_id
    profile = {
        "id": profile_id,
        "stackLevel": max(0, min(stack_level, caps.max_stack_level)),
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute",
        "transactionId": sp.transaction_id,
        "chargingSchedule": [{
            "id": profile_id,
            "startSchedule": _start_text(sp.start),
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": [dict(fields) for fields in shape.periods],
            "duration": shape.duration,
        }],
    }
    carried = Setpoints(sp.station_id, sp.evse_id, sp.transaction_id, sp.start, sp.slot_s, shape.values, sp.phases)
    return ShapedProfile(profile, carried, unit)


def failsafe_profile(caps: StationCaps, current_a: float) -> dict[str, Any]:
    """The conservative TxDefaultProfile (install on EVSE 0 = each EVSE) that holds while we cannot control.

    Relative with one period: in force for every transaction, independent of the station's clock.
    Our TxProfiles sit above it. A limit in the 0-6 A gap becomes 0, never 6 A: a fail-safe must
    not allow more than asked (the config check refuses such values; this guards other callers).
    """
    amps = max(0.0, min(current_a, caps.max_current_a))
    if 0 < amps < MIN_OCPP_CURRENT_A:
        amps = 0.0
    return fail_safe_default_profile(profile_id=FAILSAFE_PROFILE_ID, limit=_to_wire(amps, caps.unit, caps.phases),
                                     unit=caps.unit)


def _holds_for(old: Setpoints, new: Setpoints) -> bool:
    """``old`` is a schedule of the same transaction and phases as ``new`` (it is in force for it)."""
    return old.transaction_id == new.transaction_id and old.phases == new.phases


@dataclass
class Pusher:
    """Sends profiles and remembers what each session has installed."""

    send: SendProfile
    hysteresis: Hysteresis = field(default_factory=Hysteresis)
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    stack_level: int = TX_STACK_LEVEL
    installed: dict[tuple[str, int], Setpoints] = field(default_factory=dict)
    #: The station's clock offset each installed schedule was anchored on.
    installed_offset: dict[tuple[str, int], float] = field(default_factory=dict)
    pushed_at: dict[tuple[str, int], datetime] = field(default_factory=dict)
    #: Accepted pushes so far, and the count at each session's last one: what came after a moment
    #: (a question to the station) is told by counting, whatever the clock does.
    accepted: int = 0
    accepted_as: dict[tuple[str, int], int] = field(default_factory=dict)
    #: Sessions whose installed schedule was read back or reported, not accepted from us (:meth:`ours`).
    adopted: set[tuple[str, int]] = field(default_factory=set)
    #: Profiles queued or sent but not yet answered, per session, in the order they go out: once they
    #: land the station runs the last of them (if accepted), so a new plan is judged against that one.
    in_flight: dict[tuple[str, int], list[ShapedProfile]] = field(default_factory=dict)
    sent: int = 0
    skipped: int = 0
    identical: int = 0  # profiles sent that prescribed exactly what the station had (goal: none)
    chunk: int = 250  # stations whose calls start before the event loop gets a turn

    def forget(self, station_id: str, evse_id: int | None = None) -> None:
        """The transaction ended or the station rebooted: what we knew is gone."""
        keys = [(station_id, evse_id)] if evse_id is not None else [k for k in self.installed if k[0] == station_id]
        for key in keys:
            self.installed.pop(key, None)
            self.pushed_at.pop(key, None)
            self.installed_offset.pop(key, None)
            self.adopted.discard(key)

    def adopt(self, key: tuple[str, int], setpoints: Setpoints, offset_s: float) -> None:
        """What the station says (or the store remembers) it holds, read on its clock at ``offset_s``."""
        self.installed[key] = setpoints
        self.installed_offset[key] = offset_s
        self.adopted.add(key)

    def doubt(self, key: tuple[str, int]) -> None:
        """What ``key`` holds is not known any more (the next plan sends it its schedule), unless a
        profile on the wire lands and says so."""
        self.installed.pop(key, None)
        self.installed_offset.pop(key, None)
        self.adopted.discard(key)

    def ours(self, key: tuple[str, int]) -> bool:
        """Whether what ``key`` runs once the wire is quiet came from this controller (a profile on
        the wire, or one it accepted from us), not from a read-back or a station's report: one of an
        earlier leader may predate the limit in force."""
        return key in self.in_flight or (key in self.installed and key not in self.adopted)

    def seen_now(self, key: tuple[str, int], offset_now: float) -> Setpoints | None:
        """The installed schedule of ``key`` as it plays out on our clock with the station's offset now."""
        old = self.installed.get(key)
        if old is None:
            return None
        return as_seen_now(old, self.installed_offset.get(key, 0.0), offset_now)

    def expected(self, key: tuple[str, int], offset_now: float) -> Setpoints | None:
        """What ``key`` will run once what is on the wire lands: the last profile sent or queued for
        it, else the installed one (as it plays out on our clock with the station's offset now)."""
        flying = self.in_flight.get(key)
        if flying:
            return as_seen_now(flying[-1].carried, flying[-1].offset_s, offset_now)
        return self.seen_now(key, offset_now)

    def due(self, plans: list[tuple[Setpoints, StationCaps, str]],
            headroom_kw: Mapping[str, float | Sequence[float]] | None = None,
            *, force: bool = False, offsets: Mapping[str, float] | None = None,
            cut: bool = False, hold_slots: int = 0, newcomers: bool = False,
            hysteresis: Hysteresis | None = None) -> tuple[list[ShapedProfile], list[PushResult]]:
        """Split into profiles to send and results for skipped sessions.

        ``plans`` carry each session's capacity group; a group's skipped sessions may together
        exceed their new setpoints by at most its ``headroom_kw`` in every slot (per slot from
        the plans' common start, or one figure for all; default 0), judged at every instant of
        the horizon (``Hysteresis.budgeted``): while some instant is over, the sessions with the
        largest excess then are sent until it fits, so hysteresis never breaks a limit, not even
        one that begins later in the horizon. ``offsets``: each
        station's clock minus ours (the schedules are anchored on it); ``cut``: the immediate
        cut, sent as Relative profiles to stations that take them (held for ``hold_slots``).
        ``newcomers``: a plan going out beside a wave still in flight sends only to sessions that
        hold no profile of theirs yet; the others keep what they have or have on the wire as far
        as the headroom allows (the budget above decides, as for hysteresis) and get the plan in
        the next full wave. ``hysteresis``: the rules to judge by this time (the caller's, e.g. paced
        to the plans' actual spacing), else ``self.hysteresis``.
        """
        now = self.clock()
        h = hysteresis or self.hysteresis
        to_send: list[ShapedProfile] = []
        skipped: list[PushResult] = []
        candidates: dict[str, list[tuple[Setpoints, ShapedProfile]]] = {}
        for sp, caps, group in plans:
            try:
                shaped = shape_tx_profile(sp, caps, self.stack_level)
            except ValueError as exc:  # e.g. a transaction id OCPP cannot carry in a profile
                skipped.append(PushResult(sp.station_id, sp.evse_id, sp.transaction_id, "invalid", None, None,
                                          caps.unit, now, reason=str(exc)[:200]))
                continue
            offset = (offsets or {}).get(sp.station_id, 0.0)
            shaped = as_relative(shaped, hold_slots) if cut and caps.relative_tx else \
                on_station_clock(shaped, offset, fresh=True)
            key = (sp.station_id, sp.evse_id)
            # A profile still on the wire replaces ``installed`` any moment: the new plan is judged
            # against it, and if it differs, sent behind it (one call per station at a time, in order).
            # Were that one refused or lost, the station keeps ``installed``, nothing is in flight any
            # more and the next plan judges against ``installed`` again.
            old = self.expected(key, offset)
            if force or old is None or not _holds_for(old, shaped.carried) or (
                    not newcomers and h.unchanged(old, shaped.carried, now, self.pushed_at.get(key)) is None):
                to_send.append(shaped)
                if old is not None and key not in self.in_flight and same_limits(old, shaped.carried, now):
                    self.identical += 1
            else:
                candidates.setdefault(group, []).append((old, shaped))
        for group, items in candidates.items():
            excess, budget = h.budgeted([(old, shaped.carried) for old, shaped in items], now,
                                        (headroom_kw or {}).get(group, 0.0), exact=not cut)
            keep = keep_within_budget([(e, shaped) for e, (_, shaped) in zip(excess, items)], budget)
            kept = {id(shaped) for _, shaped in keep}
            to_send.extend(shaped for _, shaped in items if id(shaped) not in kept)
            for _, shaped in keep:
                sp = shaped.carried
                if not newcomers:  # judged against the limits in force: a plan beside a wave may hold it
                    self.adopted.discard((sp.station_id, sp.evse_id))
                held = self.expected((sp.station_id, sp.evse_id), shaped.offset_s)
                skipped.append(PushResult(sp.station_id, sp.evse_id, sp.transaction_id, "skipped",
                                          held.value_at(now) if held is not None else None, None,
                                          shaped.unit, now, reason="within hysteresis"))
        self.skipped += sum(r.status == "skipped" for r in skipped)
        return to_send, skipped

    def queue(self, profiles: list[ShapedProfile]) -> None:
        """``profiles`` count as on the wire from now on (see :meth:`expected`, :meth:`ours`), though
        they go out later by ``push(..., queued=True)``: a wave's increases wait for its reductions to
        be answered, and a plan beside the wave must not take them for sessions without a schedule.
        What is never pushed goes back through :meth:`unqueue`."""
        for shaped in profiles:
            self.in_flight.setdefault((shaped.carried.station_id, shaped.carried.evse_id), []).append(shaped)

    def unqueue(self, profiles: list[ShapedProfile]) -> None:
        """Queued profiles that will not be pushed after all (their wave was cancelled first)."""
        for shaped in profiles:
            self._landed(shaped)

    async def push(self, profiles: list[ShapedProfile], wave: Wave | None = None,
                   chunk: int | None = None, *, queued: bool = False) -> list[PushResult]:
        """Send every profile; stations in parallel, one call per station at a time.

        Calls start in chunks of ``chunk`` stations (default ``self.chunk``) with a yield to the
        event loop between chunks, so a stricter limit arriving mid-wave is seen at once (a cut
        itself goes out in one burst: answers and meter values read in between would only delay
        it). Once ``wave`` is superseded, what has not gone out yet is dropped (status
        ``superseded``: the station keeps what it has); calls already on the wire finish.
        ``queued``: the profiles were put on the wire by :meth:`queue` already.
        """
        wave = wave or Wave()
        by_station: dict[str, list[ShapedProfile]] = {}
        for shaped in profiles:
            by_station.setdefault(shaped.carried.station_id, []).append(shaped)
        if not queued:
            self.queue(profiles)  # before any await: ``due`` sees them at once
        stations = list(by_station.values())  # each station's profiles not yet taken up
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Future[list[PushResult]]] = []
        size = max(1, chunk or self.chunk)
        try:
            for first in range(0, len(stations), size):
                if first:
                    await asyncio.sleep(0)
                tasks.extend(loop.create_task(self._push_station(items, wave))
                             for items in stations[first:first + size])
            groups = await asyncio.gather(*tasks)
        finally:
            for items in stations:  # only when cancelled: these never went out
                for shaped in items:
                    self._landed(shaped)
                items.clear()
        return [r for group in groups for r in group]

    def _landed(self, shaped: ShapedProfile) -> None:
        """A queued or sent profile was answered, failed or dropped: no longer on the wire."""
        key = (shaped.carried.station_id, shaped.carried.evse_id)
        flying = self.in_flight.get(key, [])
        for i, item in enumerate(flying):
            if item is shaped:
                del flying[i]
                break
        if not flying:
            self.in_flight.pop(key, None)

    async def _push_station(self, items: list[ShapedProfile], wave: Wave) -> list[PushResult]:
        """Send ``items`` in order, taking each off the list as it goes out (what is left when
        cancelled was never sent, and :meth:`push` releases it)."""
        results = []
        while items:
            shaped = items.pop(0)
            sp = shaped.carried
            period = shaped.profile["chargingSchedule"][0]["chargingSchedulePeriod"][0]
            first = period.get("setpoint", period["limit"])  # a 2.1 discharge period's value is its setpoint
            if wave.superseded:
                self._landed(shaped)
                results.append(PushResult(sp.station_id, sp.evse_id, sp.transaction_id, "superseded",
                                          sp.value_at(self.clock()), first, shaped.unit, self.clock(),
                                          reason="a stricter limit came first"))
                continue
            started = time.perf_counter()
            sent_at = self.clock()
            status, reason = "error", None
            key = (sp.station_id, sp.evse_id)
            try:
                response = await self.send(sp.station_id, sp.evse_id, shaped.profile)
                status = str(response.get("status", "error"))
                reason = (response.get("statusInfo") or {}).get("reasonCode")
            except Exception as exc:  # noqa: BLE001 - offline, timeout, CALLERROR: recorded, never raised
                status, reason = type(exc).__name__, str(exc)[:200]
            finally:
                self._landed(shaped)
            self.sent += 1
            at = self.clock()
            if status == "Accepted":
                self.installed[key] = sp
                self.installed_offset[key] = shaped.offset_s
                self.pushed_at[key] = at
                self.accepted += 1
                self.accepted_as[key] = self.accepted
            else:
                self.installed.pop(key, None)
                self.installed_offset.pop(key, None)
            self.adopted.discard(key)
            in_force = sp.value_at(at)
            results.append(PushResult(sp.station_id, sp.evse_id, sp.transaction_id, status,
                                      in_force if in_force is not None else sp.current_a[0], first, shaped.unit,
                                      at, time.perf_counter() - started, reason, sent_at))
        return results


class Wave:
    """One round of profiles going out; a newer, stricter round supersedes it."""

    def __init__(self, kind: str = "plan") -> None:
        self.kind = kind
        self.superseded = False
        self._on_supersede: list[Callable[[], None]] = []

    def when_superseded(self, action: Callable[[], None]) -> None:
        """Run ``action`` the moment the wave is superseded (at once if it is already)."""
        if self.superseded:
            action()
        else:
            self._on_supersede.append(action)

    def supersede(self) -> None:
        self.superseded = True
        actions, self._on_supersede = self._on_supersede, []
        for action in actions:
            action()

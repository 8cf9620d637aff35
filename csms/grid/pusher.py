"""Turn planned setpoints into TxProfiles and get them onto the stations.

A TxProfile carries the whole planned schedule, so a station keeps following the plan when its
link drops. Each profile is shaped for its station: its rate unit, stack level and period count,
negative limits only where the station model supports V2G. Pushes that would not change anything
meaningful are skipped (hysteresis), so a busy grid does not flood chargers with
SetChargingProfile. All stations are called concurrently, one call per station at a time (the
daemon queues per station anyway).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from csms.grid.sessions import StationCaps
from profiles.planner import SessionPlan
from profiles.profile_builder import fail_safe_default_profile, tx_profile
from profiles.units import VOLTAGE_V, round_down_one_decimal

#: Profile ids the controller owns, far from what operators and tools usually pick.
TX_PROFILE_ID_BASE = 770_000
FAILSAFE_PROFILE_ID = 769_999
#: Stack level of our TxProfiles (capped by the station's ProfileStackLevel).
TX_STACK_LEVEL = 1
MIN_OCPP_CURRENT_A = 6.0

SendProfile = Callable[[str, int, dict[str, Any]], Awaitable[dict[str, Any]]]


def iso_seconds(at: datetime) -> str:
    return at.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Setpoints:
    """One session's plan: per-phase amps per slot from ``start`` (negative = discharge)."""

    station_id: str
    evse_id: int
    transaction_id: str
    start: datetime
    slot_s: float
    current_a: tuple[float, ...]
    phases: int

    def value_at(self, at: datetime) -> float | None:
        """Amps planned at ``at``; None outside the plan."""
        offset = (at - self.start).total_seconds()
        if offset < 0:
            return None
        index = int(offset // self.slot_s)
        return self.current_a[index] if index < len(self.current_a) else None

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.slot_s * len(self.current_a))

    def breakpoints(self) -> list[datetime]:
        return [self.start + timedelta(seconds=i * self.slot_s) for i in range(len(self.current_a))]


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
    """A TxProfile and the setpoints it actually carries (after truncation and clamping)."""

    profile: dict[str, Any]
    carried: Setpoints
    unit: str


def _to_wire(amps: float, unit: str, phases: int) -> float:
    if unit == "W":
        return round_down_one_decimal(amps * phases * VOLTAGE_V)
    return round_down_one_decimal(amps)


def shape_tx_profile(sp: Setpoints, caps: StationCaps, stack_level: int = TX_STACK_LEVEL) -> ShapedProfile:
    """A TxProfile for ``sp`` that this station accepts (built by ``profiles.profile_builder``).

    Values in the 0-6 A gap become 0 (IEC 61851 cannot signal them); discharge is clamped to 0 on
    stations not configured for V2G. Beyond ``PeriodsPerSchedule`` changes the schedule is cut
    short with ``duration``, and it always ends with the plan's horizon: after that the station
    falls back to its conservative fail-safe default rather than hold a stale value. The
    controller re-plans long before either happens.
    """
    values = []
    for amps in sp.current_a:
        if amps < 0 and not caps.v2g:
            amps = 0.0
        if 0 < abs(amps) < MIN_OCPP_CURRENT_A:
            amps = 0.0
        values.append(max(-caps.max_current_a, min(caps.max_current_a, amps)))
    unit = caps.unit
    max_periods = max(1, caps.periods_per_schedule)
    end_slot, changes, last = len(values), 0, None
    for index, amps in enumerate(values):
        wire = _to_wire(amps, unit, sp.phases)
        if wire != last:
            changes, last = changes + 1, wire
            if changes > max_periods:
                end_slot = index
                break
    carried = Setpoints(sp.station_id, sp.evse_id, sp.transaction_id, sp.start, sp.slot_s,
                        tuple(values[:end_slot]), sp.phases)
    plan = SessionPlan(session_id=f"{sp.station_id}#{sp.evse_id}", current_a=carried.current_a, power_kw=(),
                       delivered_kwh=0.0, unmet_kwh=0.0, guarantee_unmet_kwh=0.0, reason=None)
    profile = tx_profile(plan, profile_id=TX_PROFILE_ID_BASE + sp.evse_id,
                         stack_level=max(0, min(stack_level, caps.max_stack_level)),
                         transaction_id=sp.transaction_id, start=sp.start, slot_s=sp.slot_s, unit=unit,  # type: ignore[arg-type]
                         phases=sp.phases, max_periods=max_periods, allow_negative=caps.v2g)
    profile["chargingSchedule"][0]["duration"] = max(1, int(sp.slot_s * end_slot))
    return ShapedProfile(profile, carried, unit)


def failsafe_profile(caps: StationCaps, current_a: float) -> dict[str, Any]:
    """The conservative TxDefaultProfile (install on EVSE 0 = each EVSE) that holds while we cannot control.

    Relative with one period: in force for every transaction, independent of the station's clock.
    Our TxProfiles sit above it.
    """
    amps = max(0.0, min(current_a, caps.max_current_a))
    if 0 < amps < MIN_OCPP_CURRENT_A:
        amps = MIN_OCPP_CURRENT_A
    return fail_safe_default_profile(profile_id=FAILSAFE_PROFILE_ID, limit=_to_wire(amps, caps.unit, caps.phases),
                                     unit=caps.unit)  # type: ignore[arg-type]


@dataclass
class Hysteresis:
    """When a new plan is close enough to what a station already has."""

    current_a: float = 1.0  # an increase smaller than this is not worth a message
    refresh_s: float = 1800.0  # re-send when the installed schedule covers less than this ahead
    min_interval_s: float = 0.0  # a safe (non-decreasing) change waits this long after the last push

    def unchanged(self, old: Setpoints | None, new: Setpoints, now: datetime,
                  pushed_at: datetime | None = None) -> float | None:
        """None if ``new`` must be sent; else the kW by which keeping ``old`` exceeds ``new`` now
        (negative: keeping it uses less than planned).

        Keeping is allowed when the installed schedule differs from the new plan by less than
        ``current_a`` everywhere in the horizon, with no pause, resume or discharge change in it
        (a plan drifting by seconds or tenths of an amp must not re-send every profile). Whether
        the excess is affordable is decided for the whole group by :meth:`Pusher.due`. Within
        ``min_interval_s`` of the last push, increases of any size wait.
        """
        if old is None or old.transaction_id != new.transaction_id or old.phases != new.phases:
            return None
        if old.end < min(new.end, now + timedelta(seconds=self.refresh_s)):
            return None
        recent = pushed_at is not None and (now - pushed_at).total_seconds() < self.min_interval_s
        points = {now} | {t for t in new.breakpoints() if t > now} | {t for t in old.breakpoints() if t > now}
        for t in points:
            if t >= new.end:
                continue
            a_new, a_old = new.value_at(t), old.value_at(t)
            if a_new is None:
                continue
            if a_old is None:
                return None
            if recent and a_old <= a_new:
                continue
            if (a_old == 0) != (a_new == 0) or (a_old < 0) != (a_new < 0) or abs(a_new - a_old) >= self.current_a:
                return None
        a_new, a_old = new.value_at(now), old.value_at(now)
        if a_new is None or a_old is None:
            return None
        return (a_old - a_new) * new.phases * VOLTAGE_V / 1000.0


@dataclass
class Pusher:
    """Sends profiles and remembers what each session has installed."""

    send: SendProfile
    hysteresis: Hysteresis = field(default_factory=Hysteresis)
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    stack_level: int = TX_STACK_LEVEL
    installed: dict[tuple[str, int], Setpoints] = field(default_factory=dict)
    pushed_at: dict[tuple[str, int], datetime] = field(default_factory=dict)
    sent: int = 0
    skipped: int = 0

    def forget(self, station_id: str, evse_id: int | None = None) -> None:
        """The transaction ended or the station rebooted: what we knew is gone."""
        for key in [k for k in self.installed if k[0] == station_id and (evse_id is None or k[1] == evse_id)]:
            del self.installed[key]
            self.pushed_at.pop(key, None)

    def due(self, plans: list[tuple[Setpoints, StationCaps, str]], headroom_kw: dict[str, float] | None = None,
            *, force: bool = False) -> tuple[list[ShapedProfile], list[PushResult]]:
        """Split into profiles to send and results for skipped sessions.

        ``plans`` carry each session's capacity group; a group's skipped sessions may together
        exceed their new setpoints by at most its ``headroom_kw`` (default 0): the largest
        excesses are sent until the rest fits, so hysteresis never breaks a limit.
        """
        now = self.clock()
        to_send: list[ShapedProfile] = []
        skipped: list[PushResult] = []
        candidates: dict[str, list[tuple[float, ShapedProfile]]] = {}
        for sp, caps, group in plans:
            try:
                shaped = shape_tx_profile(sp, caps, self.stack_level)
            except ValueError as exc:  # e.g. a transaction id OCPP cannot carry in a profile
                skipped.append(PushResult(sp.station_id, sp.evse_id, sp.transaction_id, "invalid", None, None,
                                          caps.unit, now, reason=str(exc)[:200]))
                continue
            key = (sp.station_id, sp.evse_id)
            excess = None if force else self.hysteresis.unchanged(self.installed.get(key), shaped.carried, now,
                                                                   self.pushed_at.get(key))
            if excess is None:
                to_send.append(shaped)
            else:
                candidates.setdefault(group, []).append((excess, shaped))
        for group, items in candidates.items():
            budget = (headroom_kw or {}).get(group, 0.0)
            items.sort(key=lambda item: item[0])  # largest excess last: sent first when over budget
            total = sum(excess for excess, _ in items)
            while items and total > budget + 1e-9:
                excess, shaped = items.pop()
                total -= excess
                to_send.append(shaped)
            for _, shaped in items:
                sp = shaped.carried
                skipped.append(PushResult(sp.station_id, sp.evse_id, sp.transaction_id, "skipped",
                                          self.installed[(sp.station_id, sp.evse_id)].value_at(now), None,
                                          shaped.unit, now, reason="within hysteresis"))
        self.skipped += sum(r.status == "skipped" for r in skipped)
        return to_send, skipped

    async def push(self, profiles: list[ShapedProfile]) -> list[PushResult]:
        """Send every profile; stations in parallel, one call per station at a time."""
        by_station: dict[str, list[ShapedProfile]] = {}
        for shaped in profiles:
            by_station.setdefault(shaped.carried.station_id, []).append(shaped)
        groups = await asyncio.gather(*(self._push_station(items) for items in by_station.values()))
        return [r for group in groups for r in group]

    async def _push_station(self, items: list[ShapedProfile]) -> list[PushResult]:
        results = []
        for shaped in items:
            sp = shaped.carried
            first = shaped.profile["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"]
            started = time.perf_counter()
            sent_at = self.clock()
            status, reason = "error", None
            try:
                response = await self.send(sp.station_id, sp.evse_id, shaped.profile)
                status = str(response.get("status", "error"))
                reason = (response.get("statusInfo") or {}).get("reasonCode")
            except Exception as exc:  # noqa: BLE001 - offline, timeout, CALLERROR: recorded, never raised
                status, reason = type(exc).__name__, str(exc)[:200]
            self.sent += 1
            at = self.clock()
            key = (sp.station_id, sp.evse_id)
            if status == "Accepted":
                self.installed[key] = sp
                self.pushed_at[key] = at
            else:
                self.installed.pop(key, None)
            in_force = sp.value_at(at)
            results.append(PushResult(sp.station_id, sp.evse_id, sp.transaction_id, status,
                                      in_force if in_force is not None else sp.current_a[0], first, shaped.unit,
                                      at, time.perf_counter() - started, reason, sent_at))
        return results

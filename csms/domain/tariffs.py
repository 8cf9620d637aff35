"""Tariffs and the cost of a charging session (OCPP 2.0.1 block I), as pure functions.

A plan prices energy (per kWh, optionally per time-of-day window), charging time (per hour in
chargingState Charging), idle time (per hour in SuspendedEV or EVConnected after charging began,
after a grace period) and a fixed session fee. A grid pause (SuspendedEVSE: the station or the
central system holds the power back) costs the driver nothing. Tokens get the plan of their
group, else the default plan, else no cost at all.

The clock is the station's: a session is priced from the timestamps and register readings of its
events, so a late or offline-delivered event gives the same figures. Energy between two readings
is split linearly across a time-of-day boundary. Every component is rounded half-up to cents and
the total is their sum, so the breakdown always adds up.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CENT = Decimal("0.01")
MAX_PRICE = Decimal(10_000)
IDLE_STATES = frozenset({"SuspendedEV", "EVConnected"})
CHARGING = "Charging"
PLAN_KEYS = frozenset({"energy_per_kwh", "time_per_hour", "idle_per_hour", "idle_grace_min", "session_fee",
                       "timezone", "time_of_day", "groups"})
SECTION_KEYS = frozenset({"currency", "default", "cost_update_interval_s", "plans"})
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


class TariffError(ValueError):
    """A tariff that cannot be used; ``field`` is the dotted path of the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class TimeOfDayPrice:
    start: time
    end: time  # end <= start: the window runs past midnight
    energy_per_kwh: Decimal

    def covers(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@dataclass(frozen=True)
class TariffPlan:
    name: str
    energy_per_kwh: Decimal = Decimal(0)
    time_per_hour: Decimal = Decimal(0)
    idle_per_hour: Decimal = Decimal(0)
    idle_grace_min: Decimal = Decimal(0)
    session_fee: Decimal = Decimal(0)
    timezone: str = "UTC"
    time_of_day: tuple[TimeOfDayPrice, ...] = ()
    groups: tuple[str, ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def energy_price_at(self, at: datetime) -> Decimal:
        local = at.astimezone(self.zone).time()
        return next((w.energy_per_kwh for w in self.time_of_day if w.covers(local)), self.energy_per_kwh)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "energy_per_kwh": float(self.energy_per_kwh),
                "time_per_hour": float(self.time_per_hour), "idle_per_hour": float(self.idle_per_hour),
                "idle_grace_min": float(self.idle_grace_min), "session_fee": float(self.session_fee),
                "timezone": self.timezone, "groups": list(self.groups),
                "time_of_day": [{"start": w.start.strftime("%H:%M"), "end": w.end.strftime("%H:%M"),
                                 "energy_per_kwh": float(w.energy_per_kwh)} for w in self.time_of_day]}


@dataclass(frozen=True)
class Tariffs:
    currency: str = "EUR"
    default: str | None = None
    cost_update_interval_s: float = 60.0
    plans: Mapping[str, TariffPlan] = field(default_factory=dict)

    def plan_for(self, group_id: str | None) -> TariffPlan | None:
        """The plan of a token's group, else the default plan, else None (no cost)."""
        if group_id is not None:
            for plan in self.plans.values():
                if group_id in plan.groups:
                    return plan
        return self.plans.get(self.default) if self.default is not None else None

    def with_plans(self, extra: Iterable[TariffPlan]) -> Tariffs:
        """These tariffs with ``extra`` plans added or replacing those of the same name."""
        plans = dict(self.plans)
        plans.update({p.name: p for p in extra})
        return Tariffs(self.currency, self.default, self.cost_update_interval_s, plans)


# Parsing (config section and API bodies) ----------------------------------------------------------
def _price(value: Any, path: str, limit: Decimal = MAX_PRICE) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TariffError(path, f"expected a number, got {value!r}")
    amount = Decimal(str(value))
    if not Decimal(0) <= amount <= limit:
        raise TariffError(path, f"must be between 0 and {limit}, got {value!r}")
    return amount


def _clock(value: Any, path: str) -> time:
    match = _HHMM.match(value) if isinstance(value, str) else None
    if match is None:
        raise TariffError(path, f"expected a time of day as HH:MM, got {value!r}")
    return time(int(match.group(1)), int(match.group(2)))


def parse_plan(name: Any, data: Any, path: str = "") -> TariffPlan:
    """A plan from its mapping (config or API body); raises TariffError naming the key."""
    prefix = f"{path}." if path else ""
    if not isinstance(name, str) or not _NAME.match(name):
        raise TariffError(path or "name", f"a plan name is 1-40 letters, digits, '_', '.' or '-', got {name!r}")
    if not isinstance(data, Mapping):
        raise TariffError(path or "<body>", f"expected a mapping, got {type(data).__name__}")
    for key in data:
        if key not in PLAN_KEYS:
            raise TariffError(f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(PLAN_KEYS))})")
    zone = data.get("timezone", "UTC")
    try:
        ZoneInfo(zone) if isinstance(zone, str) else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if not isinstance(zone, str):
        raise TariffError(f"{prefix}timezone", f"unknown time zone {data.get('timezone')!r}")
    windows = data.get("time_of_day", [])
    if not isinstance(windows, list):
        raise TariffError(f"{prefix}time_of_day", "expected a list of {start, end, energy_per_kwh}")
    parsed_windows = []
    for n, window in enumerate(windows):
        at = f"{prefix}time_of_day[{n}]"
        if not isinstance(window, Mapping) or set(window) != {"start", "end", "energy_per_kwh"}:
            raise TariffError(at, "expected exactly start, end and energy_per_kwh")
        start, end = _clock(window["start"], f"{at}.start"), _clock(window["end"], f"{at}.end")
        if start == end:
            raise TariffError(f"{at}.end", "a window needs an end different from its start")
        parsed_windows.append(TimeOfDayPrice(start, end, _price(window["energy_per_kwh"], f"{at}.energy_per_kwh")))
    groups = data.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) and 1 <= len(g) <= 36 for g in groups):
        raise TariffError(f"{prefix}groups", "expected a list of id-token group ids (1-36 characters)")
    return TariffPlan(
        name=name,
        **{k: _price(data[k], f"{prefix}{k}") for k in ("energy_per_kwh", "time_per_hour", "idle_per_hour",
                                                          "session_fee") if k in data},
        idle_grace_min=_price(data.get("idle_grace_min", 0), f"{prefix}idle_grace_min", Decimal(1440)),
        timezone=zone, time_of_day=tuple(parsed_windows), groups=tuple(dict.fromkeys(groups)))


def parse_tariffs(section: Any, path: str = "tariffs") -> Tariffs:
    """The ``tariffs`` config section; raises TariffError with the key path."""
    if not isinstance(section, Mapping):
        raise TariffError(path, f"expected a mapping, got {type(section).__name__}")
    for key in section:
        if key not in SECTION_KEYS:
            raise TariffError(f"{path}.{key}", f"unknown key (known: {', '.join(sorted(SECTION_KEYS))})")
    currency = section.get("currency", "EUR")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        raise TariffError(f"{path}.currency", f"expected an ISO 4217 code such as EUR, got {currency!r}")
    interval = _price(section.get("cost_update_interval_s", 60), f"{path}.cost_update_interval_s", Decimal(86400))
    plans_data = section.get("plans", {})
    if not isinstance(plans_data, Mapping):
        raise TariffError(f"{path}.plans", "expected a mapping of plan name to plan")
    plans = {name: parse_plan(name, data, f"{path}.plans.{name}") for name, data in plans_data.items()}
    check_groups(plans.values(), f"{path}.plans")
    default = section.get("default")
    if default is not None and default not in plans:
        raise TariffError(f"{path}.default", f"no plan named {default!r} (plans: {', '.join(sorted(plans)) or 'none'})")
    return Tariffs(currency, default, float(interval), plans)


def check_groups(plans: Iterable[TariffPlan], path: str) -> None:
    """A group belongs to one plan at most (otherwise the price of a token would be a coin toss)."""
    owner: dict[str, str] = {}
    for plan in plans:
        for group in plan.groups:
            if group in owner and owner[group] != plan.name:
                raise TariffError(f"{path}.{plan.name}.groups",
                                  f"group {group!r} is already on plan {owner[group]!r}")
            owner[group] = plan.name


# The cost of a session ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Reading:
    """What one event said: when, the energy register (Wh) if it carried one, the charging state."""

    at: datetime
    energy_wh: float | None = None
    charging_state: str | None = None


@dataclass(frozen=True)
class Cost:
    total: Decimal
    energy: Decimal
    time: Decimal
    idle: Decimal
    fee: Decimal
    currency: str
    tariff: str
    final: bool

    def to_json(self) -> dict[str, Any]:
        return {"total": float(self.total), "currency": self.currency, "tariff": self.tariff, "final": self.final,
                "energy": float(self.energy), "time": float(self.time), "idle": float(self.idle),
                "fee": float(self.fee)}


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def _boundaries(plan: TariffPlan, start: datetime, end: datetime) -> list[datetime]:
    """Instants strictly inside (start, end) where the energy price may change."""
    if not plan.time_of_day:
        return []
    zone = plan.zone
    day = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date() + timedelta(days=1)
    out = set()
    while day <= last:
        for window in plan.time_of_day:
            for clock in (window.start, window.end):
                instant = datetime.combine(day, clock, tzinfo=zone).astimezone(timezone.utc)
                if start < instant < end:
                    out.add(instant)
        day += timedelta(days=1)
    return sorted(out)


def _energy_cost(plan: TariffPlan, start: datetime, end: datetime, wh: Decimal) -> Decimal:
    if wh <= 0:
        return Decimal(0)
    kwh = wh / Decimal(1000)
    span = (end - start).total_seconds()
    if span <= 0:
        return kwh * plan.energy_price_at(end)
    cuts = [start, *_boundaries(plan, start, end), end]
    total = Decimal(0)
    for a, b in zip(cuts, cuts[1:], strict=False):
        share = Decimal(str((b - a).total_seconds() / span))
        total += kwh * share * plan.energy_price_at(a + (b - a) / 2)
    return total


def session_cost(plan: TariffPlan, readings: Sequence[Reading], *, currency: str, final: bool) -> Cost:
    """The cost of a session so far (``final``: it has ended) from its readings, in any order."""
    ordered = sorted(readings, key=lambda r: r.at)
    energy = Decimal(0)
    charging_s = idle_s = 0.0
    state: str | None = None
    charged = False
    last_energy: tuple[datetime, Decimal] | None = None
    previous: datetime | None = None
    for reading in ordered:
        if previous is not None and state is not None:
            seconds = (reading.at - previous).total_seconds()
            if state == CHARGING:
                charging_s += seconds
            elif state in IDLE_STATES and charged:
                idle_s += seconds
        if reading.energy_wh is not None and math.isfinite(reading.energy_wh):
            value = Decimal(str(reading.energy_wh))
            if last_energy is not None:
                energy += _energy_cost(plan, last_energy[0], reading.at, value - last_energy[1])
            last_energy = (reading.at, value)
        if reading.charging_state is not None:
            state = reading.charging_state
            charged = charged or state == CHARGING
        previous = reading.at
    idle_hours = max(0.0, idle_s - float(plan.idle_grace_min) * 60) / 3600
    parts = (_cents(energy), _cents(Decimal(str(charging_s / 3600)) * plan.time_per_hour),
             _cents(Decimal(str(idle_hours)) * plan.idle_per_hour), _cents(plan.session_fee))
    return Cost(sum(parts, Decimal(0)), *parts, currency=currency, tariff=plan.name, final=final)


def tariff_message(plan: TariffPlan, currency: str) -> str:
    """The tariff in one line for the station's display (IdTokenInfo.personalMessage, at most 512)."""
    def money(amount: Decimal) -> str:
        return f"{amount:.2f} {currency}"
    parts = [f"{money(plan.energy_per_kwh)}/kWh"]
    if plan.time_per_hour:
        parts.append(f"{money(plan.time_per_hour)}/h charging")
    if plan.idle_per_hour:
        grace = f" after {plan.idle_grace_min.normalize():f} min" if plan.idle_grace_min else ""
        parts.append(f"{money(plan.idle_per_hour)}/h idle{grace}")
    if plan.session_fee:
        parts.append(f"{money(plan.session_fee)} per session")
    text = " + ".join(parts)
    for w in plan.time_of_day:
        text += f"; {w.start:%H:%M}-{w.end:%H:%M} {money(w.energy_per_kwh)}/kWh"
    return text[:512]

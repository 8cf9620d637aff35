"""Charging sessions for N charge points over the simulated weeks, calibrated to Dutch statistics.

Every charge point draws its own sessions from a generator seeded with (seed, charge point
index), so charge point k sees the same sessions whether the neighbourhood has 10 or 500 of them:
a larger fleet is the smaller one plus more charge points, which keeps the sweeps monotone.
A charge point holds one car at a time; a car that finds it occupied goes elsewhere (it is not
counted). Arrival rate, daytime dwell and session energy are calibrated so the sessions that do
take place match the targets (sessions per charge point per day, mean connection time, mean
energy per session), not the raw draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from bench.study.inputs import DAY_SLOTS, SLOT_H
from profiles.units import VOLTAGE_V

# Hourly arrival weights (local time) before the evening share is imposed: the shape of the
# project's residential scenario (simulators/scenarios/residential_evening.yaml). Our assumption.
ARRIVAL_SHAPE = (0.5, 0.3, 0.2, 0.1, 0.1, 0.2, 0.5, 1.0, 1.5, 1.8, 2.0, 2.2,
                 2.5, 2.7, 3.2, 4.2, 6.0, 9.5, 10.0, 8.5, 6.0, 4.0, 2.5, 1.2)
EVENING_HOURS = (17, 18, 19, 20)  # "sessions started 17:00-21:00"
OVERNIGHT_FROM_H = 16.0  # cars arriving from 16:00 stay until the next morning
MORNING_DEPARTURE_H = (7.75, 1.0, 5.5, 11.0)  # mean, sd, min, max (local hour, next day)


@dataclass(frozen=True)
class CarModel:
    name: str
    phases: int
    max_a: float
    battery_kwh: float
    share: float


# The project's residential car mix (simulators/scenarios/residential_evening.yaml). Our assumption.
CAR_MIX = (
    CarModel("compact 1-phase 32 A", 1, 32.0, 40.0, 0.25),
    CarModel("midsize 3-phase 16 A", 3, 16.0, 64.0, 0.45),
    CarModel("large 3-phase 32 A", 3, 32.0, 82.0, 0.20),
    CarModel("bidirectional 3-phase 16 A", 3, 16.0, 60.0, 0.10),
)


@dataclass(frozen=True)
class FleetSpec:
    """What the sessions look like; every field is stated in docs/study.md with its source."""

    sessions_per_cp_day: float = 1.0
    evening_share: float = 1 / 3
    mean_dwell_h: float = 8.0
    mean_energy_kwh: float = 14.5
    energy_sigma: float = 0.6
    cp_max_a: tuple[float, ...] = (25.0, 32.0)  # 17 kW and 22 kW charge points, alternating
    noresume_share: float = 0.10
    guarantee_kwh: float = 5.0
    v2g: bool = False
    v2g_max_kw: float = 11.0
    v2g_min_soc: float = 0.3
    target_soc: float = 0.85
    seed: int = 20250115

    def with_(self, **changes: object) -> FleetSpec:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Fleet:
    """Sessions as arrays (one entry per session), sorted by arrival slot."""

    cp: np.ndarray
    arrival: np.ndarray  # first slot present
    departure: np.ndarray  # first slot gone
    need_kwh: np.ndarray
    guarantee_kwh: np.ndarray
    phases: np.ndarray
    max_a: np.ndarray
    min_a: np.ndarray
    can_pause: np.ndarray
    v2g: np.ndarray
    discharge_kw: np.ndarray
    dischargeable_kwh: np.ndarray
    counted: np.ndarray  # arrives in a counted day (not the warm-up day)
    n_slots: int
    count_from: int  # first counted slot

    @property
    def size(self) -> int:
        return int(self.arrival.size)

    @property
    def kw_per_a(self) -> np.ndarray:
        return self.phases * VOLTAGE_V / 1000.0

    @property
    def max_kw(self) -> np.ndarray:
        return self.max_a * self.kw_per_a


@dataclass(frozen=True)
class Calibration:
    """The generator's free parameters after calibration, and what the sessions then look like."""

    rate_per_day: float  # attempted arrivals per charge point per day
    day_dwell_median_h: float
    energy_median_kwh: float
    evening_weight: float  # evening share of attempted arrivals
    sessions_per_cp_day: float
    evening_share: float
    mean_dwell_h: float
    mean_energy_kwh: float


def _arrival_weights(evening_share: float) -> np.ndarray:
    """The arrival shape with the hours 17-20 scaled so they hold `evening_share` of the arrivals."""
    w = np.asarray(ARRIVAL_SHAPE, dtype=float)
    evening = np.zeros(24, dtype=bool)
    evening[list(EVENING_HOURS)] = True
    share = min(max(evening_share, 1e-3), 0.999)
    f = share * w[~evening].sum() / ((1 - share) * w[evening].sum())
    w = np.where(evening, w * f, w)
    return w / w.sum()


def _draw_cp(spec: FleetSpec, cp: int, days: int, rate: float, day_median: float,
             energy_median: float, weights: np.ndarray) -> list[tuple[float, float, float, int, float]]:
    """One charge point's sessions: (arrival h, departure h, energy kWh, car index, resume draw)."""
    rng = np.random.default_rng([spec.seed, cp])
    cdf = np.cumsum([c.share for c in CAR_MIX])
    out: list[tuple[float, float, float, int, float]] = []
    free_at = 0.0
    for day in range(days):
        k = rng.poisson(rate)
        hours = np.sort(rng.choice(24, size=k, p=weights) + rng.uniform(0.0, 1.0, size=k))
        for h in hours:
            arr = day * 24.0 + float(h)
            # Draw everything for every attempt so that one spec change moves no other draw.
            mean, sd, lo, hi = MORNING_DEPARTURE_H
            morning = min(hi, max(lo, rng.normal(mean, sd)))
            day_dwell = min(16.0, max(0.5, rng.lognormal(math.log(day_median), 0.8)))
            energy = rng.lognormal(math.log(energy_median), spec.energy_sigma)
            car = int(np.searchsorted(cdf, rng.uniform() * cdf[-1]))
            u_resume = rng.uniform()
            if arr < free_at:
                continue
            if h >= OVERNIGHT_FROM_H:
                dep = (day + 1) * 24.0 + morning
            else:
                dep = arr + day_dwell
            out.append((arr, dep, energy, car, u_resume))
            free_at = dep
    return out


def _build(spec: FleetSpec, n_cp: int, days: int, warmup_days: int, rate: float, day_median: float,
           energy_median: float, evening_weight: float) -> Fleet:
    weights = _arrival_weights(evening_weight)
    rows = []
    for cp in range(n_cp):
        for r in _draw_cp(spec, cp, days + warmup_days, rate, day_median, energy_median, weights):
            rows.append((cp, *r))
    n_slots = (days + warmup_days + 1) * DAY_SLOTS
    if not rows:
        z = np.zeros(0)
        return Fleet(z.astype(int), z.astype(int), z.astype(int), z, z, z.astype(int), z, z, z.astype(bool),
                     z.astype(bool), z, z, z.astype(bool), n_slots, warmup_days * DAY_SLOTS)
    a = np.asarray(rows, dtype=float)
    cp_idx = a[:, 0].astype(int)
    arrival = np.ceil(a[:, 1] / SLOT_H - 1e-9).astype(int)
    departure = np.minimum(np.floor(a[:, 2] / SLOT_H + 1e-9).astype(int), n_slots)
    cars = a[:, 4].astype(int)
    phases = np.array([CAR_MIX[c].phases for c in cars])
    battery = np.array([CAR_MIX[c].battery_kwh for c in cars])
    cp_a = np.asarray(spec.cp_max_a, dtype=float)[cp_idx % len(spec.cp_max_a)]
    max_a = np.minimum(cp_a, np.array([CAR_MIX[c].max_a for c in cars]))
    kw = max_a * phases * VOLTAGE_V / 1000.0
    fits = kw * np.maximum(departure - arrival, 0) * SLOT_H * 0.999
    need = np.round(np.minimum(np.minimum(a[:, 3], 0.9 * battery), fits), 3)
    keep = (departure > arrival) & (need > 0.05)
    soc = np.clip(spec.target_soc - need / battery, 0.05, spec.target_soc)
    dis_kwh = np.maximum(0.0, soc - spec.v2g_min_soc) * battery if spec.v2g else np.zeros_like(need)
    order = np.argsort(arrival[keep], kind="stable")

    def k(x: np.ndarray) -> np.ndarray:
        return x[keep][order]

    return Fleet(
        cp=k(cp_idx), arrival=k(arrival), departure=k(departure), need_kwh=k(need),
        guarantee_kwh=k(np.minimum(need, spec.guarantee_kwh)), phases=k(phases), max_a=k(max_a),
        min_a=np.full(int(keep.sum()), 6.0), can_pause=k(a[:, 5] >= spec.noresume_share),
        v2g=np.full(int(keep.sum()), spec.v2g), discharge_kw=k(np.minimum(kw, spec.v2g_max_kw) if spec.v2g
                                                                 else np.zeros_like(kw)),
        dischargeable_kwh=k(dis_kwh), counted=k(arrival >= warmup_days * DAY_SLOTS),
        n_slots=n_slots, count_from=warmup_days * DAY_SLOTS)


def describe(fleet: Fleet, n_cp: int, days: int) -> tuple[float, float, float, float]:
    """(sessions per charge point per day, share starting 17-21 h, mean dwell h, mean energy kWh) of counted sessions."""
    c = fleet.counted
    if not c.any():
        return 0.0, 0.0, 0.0, 0.0
    hour = (fleet.arrival[c] % DAY_SLOTS) * SLOT_H
    evening = float(np.mean((hour >= EVENING_HOURS[0]) & (hour < EVENING_HOURS[-1] + 1)))
    dwell = float(np.mean(fleet.departure[c] - fleet.arrival[c]) * SLOT_H)
    return float(c.sum()) / (n_cp * days), evening, dwell, float(np.mean(fleet.need_kwh[c]))


@lru_cache(maxsize=32)
def calibrate(spec: FleetSpec, cps: int = 120, days: int = 28, rounds: int = 6) -> Calibration:
    """Fixed-point iteration on (rate, daytime dwell median, energy median) until the sessions that
    take place match the spec's targets (within a percent or so on this calibration fleet)."""
    rate, day_median = spec.sessions_per_cp_day * 1.4, 4.0
    energy_median, evening = spec.mean_energy_kwh * 0.85, spec.evening_share
    got = (0.0, 0.0, 0.0, 0.0)
    for _ in range(rounds):
        fleet = _build(spec, cps, days, 0, rate, day_median, energy_median, evening)
        got = describe(fleet, cps, days)
        rate *= spec.sessions_per_cp_day / max(got[0], 1e-6)
        day_median *= (spec.mean_dwell_h / max(got[2], 1e-6)) ** 1.5
        energy_median *= spec.mean_energy_kwh / max(got[3], 1e-6)
        odds = (spec.evening_share / (1 - spec.evening_share)) / max(got[1] / max(1 - got[1], 1e-6), 1e-6)
        evening = min(0.99, max(0.01, 1 / (1 + (1 - evening) / (evening * odds))))
    return Calibration(rate, day_median, energy_median, evening, *got)


def make_fleet(spec: FleetSpec, n_cp: int, days: int, warmup_days: int = 1) -> Fleet:
    cal = calibrate(spec)
    return _build(spec, n_cp, days, warmup_days, cal.rate_per_day, cal.day_dwell_median_h, cal.energy_median_kwh,
                  cal.evening_weight)

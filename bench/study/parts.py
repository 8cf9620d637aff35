"""The four questions of the study, each computed from simulations of one `Neighbourhood`.

1. hosting capacity per control variant, and its sensitivity to the main assumptions;
2. an evening capacity contract (17:00-20:00), feasible and below the base load;
3. a 100 kW redispatch bid held in every ISP of 17:00-20:00 (base load counted, guarantees kept);
4. day-ahead prices: price-driven vs grid-aware vs both.

Each returns plain data for `bench.study.writeup`. Progress goes to `say`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from bench.daymodel import SERVED_MIN
from bench.study.capacity import Capacity, evaluate, search
from bench.study.engine import SERVED_TOLERANCE_KWH, Run, State, plan_input, simulate
from bench.study.flex import deliverable_flex
from bench.study.inputs import DAY_SLOTS, SLOT_H, day_ahead_slots
from bench.study.scenario import VARIANTS, Neighbourhood, control_for, run_variant
from profiles.units import VOLTAGE_V

Say = Callable[[str], None]
WINDOW = (17.0, 20.0)
ALL_RESUME = "smart + pause, every car resumes"
BID_KW = 100.0
HOLD_TOLERANCE_KW = 0.5


# 1. Hosting capacity ----------------------------------------------------------------------------


@dataclass
class Hosting:
    capacities: dict[str, Capacity]
    design_rule: int  # charge points at full power that fit above the base-load peak


def _search_variant(hood: Neighbourhood, variant: str, start: int, growth: float, resolution: float) -> Capacity:
    return search(variant, lambda n: evaluate(hood, variant, n), start, growth=growth, resolution=resolution)


def design_rule(hood: Neighbourhood) -> int:
    """The deterministic sizing rule: every charge point at its full power at the base-load peak."""
    mean_cp_kw = float(np.mean(hood.fleet.cp_max_a)) * 3 * VOLTAGE_V / 1000.0
    return int((hood.transformer_kw - float(hood.base_kw().max())) // mean_cp_kw)


def describe_points(c: Capacity) -> str:
    return ", ".join(f"{p.n}{'' if p.hosted else ' x'} ({p.served_share:.1%}{', ' + p.stopped if p.stopped else ''})"
                     for p in sorted(c.points, key=lambda p: p.n))


SMART_STARTS = {"smart + pause": (4.0, 1.2), "smart (no pause)": (2.5, 1.3)}  # x uncontrolled, growth


def uncontrolled_capacity(hood: Neighbourhood) -> Capacity:
    """Uncontrolled charging is closed form (seconds), so its search is exact."""
    return _search_variant(hood, "uncontrolled", 20, 1.5, 0.0)


def smart_capacity(hood: Neighbourhood, variant: str, uncontrolled: int, resolution: float) -> Capacity:
    """A smart variant's search starts at a multiple of the uncontrolled capacity (only a starting
    point: the search runs until it fails, up or down from there)."""
    factor, growth = SMART_STARTS[variant]
    return _search_variant(hood, variant, max(1, round(factor * uncontrolled)), growth, resolution)


def hosting(hood: Neighbourhood, say: Say, *, resolution: float = 0.05) -> Hosting:
    unc = uncontrolled_capacity(hood)
    say(f"hosting: uncontrolled {unc.label()}; simulated {describe_points(unc)}")
    caps = {"uncontrolled": unc}
    for v in ("smart (no pause)", "smart + pause"):
        caps[v] = smart_capacity(hood, v, unc.capacity or 10, resolution)
        say(f"hosting: {v} {caps[v].label()}; simulated {describe_points(caps[v])}")
    return Hosting(caps, design_rule(hood))


@dataclass(frozen=True)
class Sensitivity:
    label: str
    hood: Neighbourhood
    variants: tuple[str, ...]  # the variants this assumption can change (others equal the base row)


def sensitivities(base: Neighbourhood) -> list[Sensitivity]:
    peak = float(base.base_kw().max())
    design = base.with_(base_scale=1.5 * base.households / peak)
    heavy = design.with_fleet(mean_energy_kwh=base.fleet.mean_energy_kwh * 1.5, evening_share=0.5)
    return [
        Sensitivity(f"base load at the DSO design value (1.5 kW per household: peak {1.5 * base.households:.0f} kW)",
                    design, VARIANTS),
        Sensitivity(f"energy per charge point per day x 1.5 ({1.5 * base.fleet.mean_energy_kwh:.1f} kWh per session)",
                    base.with_fleet(mean_energy_kwh=base.fleet.mean_energy_kwh * 1.5), VARIANTS),
        Sensitivity("charge points of 11 kW (3 x 16 A) instead of 17 / 22 kW", base.with_fleet(cp_max_a=(16.0,)),
                    VARIANTS),
        Sensitivity("cars that cannot resume a pause: 25 %", base.with_fleet(noresume_share=0.25), ("smart + pause",)),
        Sensitivity("cars that cannot resume a pause: 50 %", base.with_fleet(noresume_share=0.5), ("smart + pause",)),
        Sensitivity("half of the sessions start 17:00-21:00 (instead of a third)", base.with_fleet(evening_share=0.5),
                    VARIANTS),
        Sensitivity("all at once: DSO design base load, energy x 1.5, half the sessions in the evening", heavy,
                    VARIANTS),
    ]


def _sensitivity_job(hood: Neighbourhood, variant: str, start: int, resolution: float) -> Capacity:
    return _search_variant(hood, variant, start, 1.25, resolution)


def sensitivity(rows: list[Sensitivity], base: Hosting, say: Say, *, resolution: float = 0.06,
                pool: Executor | None = None) -> dict[tuple[str, str], Capacity]:
    """Each row's capacity per variant it affects, searched from the base capacity."""
    order = {"smart + pause": 0, "smart (no pause)": 1, "uncontrolled": 2}  # longest first
    jobs = sorted(((row, v) for row in rows for v in row.variants), key=lambda j: order[j[1]])
    out: dict[tuple[str, str], Capacity] = {}

    def start(v: str) -> int:
        return base.capacities[v].capacity or 10

    if pool is None:
        for row, v in jobs:
            out[(row.label, v)] = _sensitivity_job(row.hood, v, start(v), resolution)
            say(f"sensitivity: {row.label}: {v} {out[(row.label, v)].label()}")
        return out
    futures = {(row.label, v): pool.submit(_sensitivity_job, row.hood, v, start(v), resolution) for row, v in jobs}
    for key, fut in futures.items():
        out[key] = fut.result()
        say(f"sensitivity: {key[0]}: {key[1]} {out[key].label()}; simulated {describe_points(out[key])}")
    return out


@dataclass(frozen=True)
class LPCheck:
    variant: str
    n: int
    weeks: int
    heuristic_served: float
    auto_served: float
    heuristic_over_kw: float
    auto_over_kw: float
    auto_s: float
    heuristic_s: float


def lp_check(hood: Neighbourhood, variant: str, n: int, weeks: int = 2) -> LPCheck:
    """The same sessions with `plan`'s default (the LP refinement when it fits) and with its
    heuristic, over the first `weeks`: how much the LP would change a capacity point."""
    short = hood.with_(weeks=weeks)
    h = run_variant(short.with_(planner_method="heuristic"), variant, n)
    a = run_variant(short.with_(planner_method="auto"), variant, n)
    return LPCheck(variant, n, weeks, h.served_share, a.served_share, h.max_over_kw, a.max_over_kw, a.wall_s,
                   h.wall_s)


# 2. Evening capacity contract -----------------------------------------------------------------------


def window_mask(n_slots: int, count_from: int, window: tuple[float, float] = WINDOW) -> np.ndarray:
    """The window's slots on every counted day (not the warm-up day, not the final departures-only day)."""
    idx = np.arange(n_slots)
    hours = (idx % DAY_SLOTS) * SLOT_H
    return (hours >= window[0]) & (hours < window[1]) & (idx >= count_from) & (idx < n_slots - DAY_SLOTS)


@dataclass
class ContractCase:
    contract_kw: float
    runs: dict[str, Run]
    base_min_kw: float  # the base load in the window, least and most
    base_max_kw: float

    def window_stats(self, variant: str) -> dict[str, float]:
        r = self.runs[variant]
        m = window_mask(r.fleet.n_slots, r.fleet.count_from)
        ev = r.ev_kw[m]
        over = np.maximum(0.0, r.total_kw[m] - r.limit_kw[m])
        room = r.limit_kw[m] - r.base_kw[m]  # what the contract leaves the chargers (negative: discharge)
        judged = r.judged & ~r.served
        leaves = (r.fleet.departure % DAY_SLOTS) * SLOT_H
        in_window = judged & (leaves >= WINDOW[0]) & (leaves < WINDOW[1] + 1)
        return {"mean_ev_kw": float(ev.mean()), "min_ev_kw": float(ev.min()), "max_ev_kw": float(ev.max()),
                "room_kw": float(room.mean()),
                "asleep": float(np.count_nonzero(r.asleep & r.judged)),
                "unserved_leaving_17_21": float(np.count_nonzero(in_window)),
                "max_over_kw": float(over.max(initial=0.0)), "served": r.served_share,
                "guarantee_violations": float(r.guarantee_violations), "over_day_kw": r.max_over_kw}


@dataclass
class Contract:
    charge_points: int
    feasible: ContractCase
    below_base: ContractCase


def contract(hood: Neighbourhood, charge_points: int, say: Say) -> Contract:
    base = hood.base_kw()
    m = window_mask(hood.n_slots, 0)
    lo, hi = float(base[m].min()), float(base[m].max())
    feasible_kw = math.ceil(hi / 5.0) * 5.0  # just above the base load in every ISP of the window
    relief_kw = math.floor((lo - 10.0) / 5.0) * 5.0  # below the base load in every ISP: only discharge meets it
    cases = []
    for kw in (feasible_kw, relief_kw):
        runs = {}
        for variant in (*VARIANTS, "smart + pause + V2G"):
            runs[variant] = run_variant(hood, variant, charge_points, windows=((*WINDOW, kw),))
        runs[ALL_RESUME] = run_variant(hood.with_fleet(noresume_share=0.0), "smart + pause", charge_points,
                                       windows=((*WINDOW, kw),))
        case = ContractCase(kw, runs, lo, hi)
        cases.append(case)
        say(f"contract {kw:g} kW 17-20: mean EV load " + ", ".join(
            f"{v} {case.window_stats(v)['mean_ev_kw']:.1f} kW" for v in runs))
    return Contract(charge_points, cases[0], cases[1])


# 3. Redispatch bid ------------------------------------------------------------------------------------


@dataclass
class BidPoint:
    n: int
    days: int
    days_held: int
    least_reduction_kw: float  # the smallest reduction against the baseline in any ISP of any window
    served: float
    guarantee_violations: int
    max_over_kw: float
    baseline_served: float
    firm_flex_kw: list[float] = field(default_factory=list)  # ex-ante, connected cars at 17:00, whole window
    firm_first_isp_kw: list[float] = field(default_factory=list)  # the same, first ISP only

    @property
    def holds(self) -> bool:
        return (self.days_held == self.days and self.guarantee_violations == 0 and self.max_over_kw <= 0.01
                and self.served >= SERVED_MIN)


def bid_point(hood: Neighbourhood, variant: str, n: int, *, bid_kw: float = BID_KW, firm: bool = False) -> BidPoint:
    """Baseline run, then the same fleet told day-ahead to draw `bid_kw` less than that baseline in
    every ISP of 17:00-20:00 every day (the transformer limit and the base load stay in force)."""
    fleet = hood.with_fleet(v2g=variant.endswith("V2G")).fleet_for(n)
    base, limit = hood.base_kw(), hood.limit_kw()
    control = control_for(variant, hood)
    m = window_mask(fleet.n_slots, fleet.count_from)
    firm_flex: list[float] = []
    firm_first: list[float] = []
    starts = [int(t) for t in np.flatnonzero(m) if (t % DAY_SLOTS) * SLOT_H == WINDOW[0]]

    def on_watch(state: State) -> None:
        if state.present.size == 0:
            firm_flex.append(0.0)
            firm_first.append(0.0)
            return
        inp = plan_input(fleet, state, base, limit, hood.horizon_slots, control.allow_pause)
        span = int((WINDOW[1] - WINDOW[0]) / SLOT_H)
        firm_flex.append(deliverable_flex(inp, (0, min(span, len(inp.limit_kw))), resolution_kw=1.0).flex_kw)
        firm_first.append(deliverable_flex(inp, (0, 1), resolution_kw=1.0).flex_kw)

    baseline = simulate(fleet, base, limit, control, watch=starts if firm else (), on_watch=on_watch)
    bid_limit = limit.copy()
    bid_limit[m] = np.minimum(limit[m], base[m] + baseline.ev_kw[m] - bid_kw)
    with_bid = simulate(fleet, base, bid_limit, control)
    held_slot = with_bid.total_kw[m] <= bid_limit[m] + HOLD_TOLERANCE_KW
    day_of = np.flatnonzero(m) // DAY_SLOTS
    days = np.unique(day_of)
    held_days = sum(bool(held_slot[day_of == d].all()) for d in days)
    reduction = baseline.ev_kw[m] - with_bid.ev_kw[m]
    over = np.maximum(0.0, with_bid.total_kw - limit)[fleet.count_from:]
    return BidPoint(n, int(days.size), held_days, float(reduction.min()), with_bid.served_share,
                    with_bid.guarantee_violations, float(over.max(initial=0.0)), baseline.served_share,
                    firm_flex, firm_first)


@dataclass
class Redispatch:
    bid_kw: float
    needed: dict[str, BidPoint | None]  # the smallest fleet that holds the bid
    points: dict[str, list[BidPoint]]
    at_whitepaper: dict[str, list[BidPoint]]  # the whitepaper's fleet sizes, with ex-ante firm flex


WHITEPAPER_BID = {"smart + pause": (150, 200), "smart + pause + V2G": (75, 100)}


def smallest_holding(hood: Neighbourhood, variant: str, start: int, say: Say, *, bid_kw: float = BID_KW,
                     growth: float = 1.3, resolution: float = 0.08,
                     n_max: int = 2000) -> tuple[BidPoint | None, list[BidPoint]]:
    """The smallest fleet that holds the bid: grow until one holds, then bisect (more charge points
    never make the bid harder, since the extra ones only add load that can be shed)."""
    seen: dict[int, BidPoint] = {}

    def at(n: int) -> BidPoint:
        if n not in seen:
            seen[n] = bid_point(hood, variant, n, bid_kw=bid_kw)
            p = seen[n]
            say(f"redispatch {variant}: {n} charge points hold {bid_kw:g} kW on {p.days_held}/{p.days} days "
                f"(least reduction {p.least_reduction_kw:.0f} kW, served {p.served:.1%}, "
                f"guarantee violations {p.guarantee_violations})")
        return seen[n]

    n, bad, good = start, None, None
    while good is None:
        p = at(n)
        if p.holds:
            good = n
        else:
            bad = n
            if n >= n_max or p.baseline_served < SERVED_MIN:
                # Past the hosting capacity the fleet fails without any bid: no larger one can hold it.
                return None, sorted(seen.values(), key=lambda p: p.n)
            n = min(n_max, math.ceil(n * growth))
    while bad is None and good > 1:
        n = max(1, math.floor(good / growth))
        if at(n).holds:
            good = n
        else:
            bad = n
    while bad is not None and good - bad > max(1, math.floor(resolution * good)):
        mid = (good + bad) // 2
        if at(mid).holds:
            good = mid
        else:
            bad = mid
    return seen[good], sorted(seen.values(), key=lambda p: p.n)


def redispatch(hood: Neighbourhood, say: Say, *, scale: float = 1.0) -> Redispatch:
    """`scale` shrinks the bid and the fleet sizes with the transformer (1 for the 400 kVA study)."""
    bid_kw = BID_KW * scale
    needed, points, at_wp = {}, {}, {}
    for variant, sizes in WHITEPAPER_BID.items():
        start = max(1, round(sizes[0] * scale))
        needed[variant], points[variant] = smallest_holding(hood, variant, start, say, bid_kw=bid_kw)
        at_wp[variant] = [bid_point(hood, variant, max(1, round(n * scale)), bid_kw=bid_kw, firm=True)
                          for n in sizes]
        for p in at_wp[variant]:
            say(f"redispatch {variant} at {p.n}: firm flex of the connected cars at 17:00 "
                f"{min(p.firm_flex_kw, default=0):.0f}-{max(p.firm_flex_kw, default=0):.0f} kW")
    return Redispatch(bid_kw, needed, points, at_wp)


# 4. Day-ahead prices ---------------------------------------------------------------------------------


@dataclass
class TariffRun:
    name: str
    ev_kw: np.ndarray
    total_kw: np.ndarray
    limit_kw: np.ndarray
    served: float
    diversity: float
    cost_eur_kwh: float
    count_from: int

    def peak(self, inside: bool) -> tuple[float, float]:
        """(highest transformer load, its hour of day) inside or outside 17:00-20:00."""
        m = window_mask(self.total_kw.size, self.count_from)
        sel = m if inside else (~m & (np.arange(self.total_kw.size) >= self.count_from))
        idx = np.flatnonzero(sel)
        k = idx[int(np.argmax(self.total_kw[idx]))]
        return float(self.total_kw[k]), float((k % DAY_SLOTS) * SLOT_H)

    @property
    def max_over_kw(self) -> float:
        return float(np.maximum(0.0, self.total_kw - self.limit_kw)[self.count_from:].max(initial=0.0))

    @property
    def slots_over(self) -> int:
        return int(np.count_nonzero((self.total_kw - self.limit_kw)[self.count_from:] > 0.01))


def _book(hood: Neighbourhood, n: int, *, respect_limit: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each car, on arrival and in arrival order, books the cheapest quarter-hours before it
    leaves (earliest first among equal prices) at its full power; with `respect_limit` only the
    transformer room left by the base load and the cars booked before it. Returns (EV kW per slot,
    delivered kWh per session, each charge point's peak kW)."""
    fleet = hood.fleet_for(n)
    price = np.tile(day_ahead_slots(), fleet.n_slots // DAY_SLOTS + 1)[:fleet.n_slots]
    room = hood.limit_kw() - hood.base_kw() if respect_limit else np.full(fleet.n_slots, np.inf)
    ev = np.zeros(fleet.n_slots)
    delivered = np.zeros(fleet.size)
    cp_peak = np.zeros(int(fleet.cp.max(initial=-1)) + 1)
    kw_max = fleet.max_kw
    kw_min = fleet.min_a * fleet.kw_per_a
    for i in range(fleet.size):
        a, d = int(fleet.arrival[i]), int(fleet.departure[i])
        slots = a + np.lexsort((np.arange(d - a), price[a:d]))
        left = float(fleet.need_kwh[i])
        for t in slots:
            if left <= 1e-9:
                break
            kw = min(kw_max[i], room[t] - ev[t], left / SLOT_H)
            if kw < kw_min[i] and kw < left / SLOT_H - 1e-9:
                continue  # below the car's minimum current and not just the last sliver
            if kw <= 0:
                continue
            ev[t] += kw
            left -= kw * SLOT_H
            cp_peak[fleet.cp[i]] = max(cp_peak[fleet.cp[i]], kw)
        delivered[i] = fleet.need_kwh[i] - max(0.0, left)
    return ev, delivered, cp_peak


@dataclass
class Tariffs:
    charge_points: int
    runs: list[TariffRun]


def tariffs(hood: Neighbourhood, charge_points: int, say: Say) -> Tariffs:
    fleet = hood.fleet_for(charge_points)
    base, limit = hood.base_kw(), hood.limit_kw()
    price = np.tile(day_ahead_slots(), fleet.n_slots // DAY_SLOTS + 1)[:fleet.n_slots]
    counted = fleet.counted

    def finish(name: str, ev: np.ndarray, delivered: np.ndarray, cp_peak: np.ndarray | None) -> TariffRun:
        served = float(np.mean(delivered[counted] >= fleet.need_kwh[counted] - SERVED_TOLERANCE_KWH))
        ev_c = ev[fleet.count_from:]
        diversity = float(cp_peak.sum() / ev_c.max()) if cp_peak is not None and ev_c.max() > 0 else float("nan")
        energy = float(ev_c.sum() * SLOT_H)
        cost = float((ev_c * price[fleet.count_from:]).sum() * SLOT_H / energy) if energy else float("nan")
        run = TariffRun(name, ev, ev + base, limit, served, diversity, cost, fleet.count_from)
        say(f"tariffs: {name}: transformer peak {run.total_kw[fleet.count_from:].max():.0f} kW, "
            f"{run.slots_over} quarter-hours over, served {served:.1%}, {cost * 100:.1f} ct/kWh")
        return run

    runs = []
    unc = run_variant(hood, "uncontrolled", charge_points)
    runs.append(finish("uncontrolled", unc.ev_kw, unc.delivered_kwh, unc.cp_peak_kw))
    ev, got, peak = _book(hood, charge_points, respect_limit=False)
    runs.append(finish("price-driven (cheapest hours, no grid limit)", ev, got, peak))
    smart = run_variant(hood, "smart + pause", charge_points)
    runs.append(finish("grid-aware (planner, no price)", smart.ev_kw, smart.delivered_kwh, smart.cp_peak_kw))
    ev, got, peak = _book(hood, charge_points, respect_limit=True)
    runs.append(finish("price + grid (cheapest hours within the transformer room)", ev, got, peak))
    return Tariffs(charge_points, runs)

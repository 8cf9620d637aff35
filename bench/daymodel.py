"""Simulated days under one transformer: sessions from the simulator's scenarios, a residential
base load, a rolling-horizon run of any `PlanInput -> Plan` policy, and the exact windowed LP optimum.

Time is 15-minute slots from the scenario's clock start (14:00 local). A session is present from
the first slot boundary after it arrives to the last boundary before it leaves; the online policies
and the optimum see the same discretised sessions, so their gap is the planning gap alone.
The online run re-plans at every slot with only the sessions that have arrived (no future
knowledge) and applies slot 0; the optimum knows every session in advance.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from bench.report import verdict
from profiles.planner import Plan, PlanInput, SessionNeed
from profiles.units import VOLTAGE_V
from simulators.scenario import Scenario, load_scenario

SLOT_S = 900.0
SLOT_H = SLOT_S / 3600.0
DAY_SLOTS = 96
SCENARIOS = Path(__file__).resolve().parent.parent / "simulators" / "scenarios"
GUARANTEED_KWH = 5.0  # the daemon's default guaranteed minimum per session (grid.session_defaults)
SERVED_TOLERANCE_KWH = 0.05
OVER_TOLERANCE_KW = 0.01
SERVED_MIN = 0.99  # "hosted" / "met" needs at least this share of sessions fully served
EPS = 1e-6

# Diversified residential load, share of the evening peak per local hour (00..23). A round-number
# shape with the evening peak at 18:00-19:00 and the night trough at 03:00-05:00, as in the
# Dutch standard household profiles (NEDU E1A); not a fit to any dataset.
RESIDENTIAL_SHAPE = (0.42, 0.36, 0.33, 0.31, 0.31, 0.33, 0.42, 0.55, 0.58, 0.52, 0.50, 0.50,
                     0.52, 0.50, 0.50, 0.55, 0.68, 0.88, 1.00, 0.97, 0.88, 0.78, 0.66, 0.52)

Policy = Callable[[PlanInput], Plan]


@dataclass(frozen=True)
class Criterion:
    """One measured condition of a verdict."""

    name: str
    ok: bool
    measured: str


def judge(label: str, criteria: Sequence[Criterion]) -> str:
    """A verdict that says "met" only when every criterion holds, each listed with its figure."""
    if not criteria:
        raise ValueError(f"verdict {label!r} needs at least one criterion")
    detail = "; ".join(f"{c.name} {c.measured}{'' if c.ok else ' [missed]'}" for c in criteria)
    return verdict(label, all(c.ok for c in criteria), detail)


def grid_criteria(max_over_kw: float, served_share: float, guarantee_violations: int | None = None,
                  served_min: float = SERVED_MIN) -> list[Criterion]:
    """The criteria every grid verdict checks: no kW over the limit, enough sessions fully served,
    and (when given) no guaranteed minimum missed. Never a mean alone."""
    out = [Criterion("max kW over the limit", max_over_kw <= OVER_TOLERANCE_KW, f"{max_over_kw:.2f} kW"),
           Criterion(f"sessions fully served (>= {served_min:.0%})", served_share >= served_min - 1e-12,
                     f"{served_share:.1%}")]
    if guarantee_violations is not None:
        out.append(Criterion("guarantee violations", guarantee_violations == 0, str(guarantee_violations)))
    return out


@dataclass(frozen=True)
class Sess:
    sid: str
    arrival: int  # first slot present
    departure: int  # first slot no longer present
    need_kwh: float
    guaranteed_kwh: float
    phases: int
    max_a: float
    min_a: float = 6.0
    can_pause: bool = True
    v2g: bool = False
    max_discharge_kw: float = 0.0
    dischargeable_kwh: float = 0.0

    @property
    def kw_per_a(self) -> float:
        return self.phases * VOLTAGE_V / 1000.0

    @property
    def max_kw(self) -> float:
        return self.max_a * self.kw_per_a


@dataclass
class Day:
    """One transformer and its sessions. Arrays cover two days so overnight sessions can finish."""

    sessions: list[Sess]
    limit_kw: np.ndarray
    base_kw: np.ndarray
    start_hour: float = 14.0

    @property
    def n_slots(self) -> int:
        return int(self.limit_kw.size)


def base_load(peak_kw: float, n_slots: int, start_hour: float = 14.0) -> np.ndarray:
    hours = (start_hour + np.arange(n_slots) * SLOT_H) % 24.0
    lo = np.floor(hours).astype(int)
    frac = hours - lo
    shape = np.asarray(RESIDENTIAL_SHAPE)
    return peak_kw * (shape[lo] * (1 - frac) + shape[(lo + 1) % 24] * frac)


def scenario(name: str = "residential_evening", seed: int | None = None) -> Scenario:
    sc = load_scenario(SCENARIOS / f"{name}.yaml")
    return dataclasses.replace(sc, seed=seed) if seed is not None else sc


def sessions_from_scenario(sc: Scenario, charge_points: int, *, station_max_a: float | None = None,
                           all_v2g: bool = False, min_soc: float = 0.3) -> list[Sess]:
    """The scenario's sessions for `charge_points` EVSEs (stations scaled, EVSEs counted), discretised.

    A need larger than the car can take at full power during its stay is capped to that (the car
    would leave with less whatever the controller did), so "all sessions served" is attainable.
    Discharging needs a bidirectional charge point, so V2G is all (`all_v2g`) or nothing.
    """
    plans = sc.plan(stations=max(1, math.ceil(charge_points / max(m.evse_count for m in sc.station_models.values()))))
    out: list[Sess] = []
    evses = 0
    for sp in plans:
        for evse in range(1, sp.model.evse_count + 1):
            if evses >= charge_points:
                break
            evses += 1
            for k, s in enumerate(x for x in sp.sessions if x.evse_id == evse):
                a = math.ceil((s.arrival - sc.start) / timedelta(seconds=SLOT_S) - 1e-9)
                d = math.floor((s.departure - sc.start) / timedelta(seconds=SLOT_S) + 1e-9)
                if a >= DAY_SLOTS or d <= a or a < 0:
                    continue
                phases = s.ev.phases if sp.model.phases == 3 else 1
                max_a = min(sp.model.max_current_a if station_max_a is None else station_max_a, s.ev.max_current_a)
                cap = max_a * phases * VOLTAGE_V / 1000.0 * (d - a) * SLOT_H * 0.999
                need = min(s.energy_need_kwh, cap)
                v2g = all_v2g
                dis = max(0.0, (s.soc_start - min_soc) * s.ev.battery_kwh) if v2g else 0.0
                out.append(Sess(
                    sid=f"{sp.station_id}/{evse}/{k}", arrival=a, departure=d, need_kwh=round(need, 3),
                    guaranteed_kwh=min(need, GUARANTEED_KWH), phases=phases, max_a=max_a,
                    min_a=max(6.0, s.ev.min_current_a), can_pause=s.ev.resumes_after_pause, v2g=v2g,
                    max_discharge_kw=(s.ev.max_discharge_w / 1000.0 if s.ev.max_discharge_w else max_a * phases
                                      * VOLTAGE_V / 1000.0) if v2g else 0.0,
                    dischargeable_kwh=dis))
    out.sort(key=lambda x: (x.arrival, x.sid))
    return out


@dataclass
class Outcome:
    """What one policy did over one day."""

    policy: str
    ev_kw: np.ndarray  # net EV power per slot
    total_kw: np.ndarray
    limit_kw: np.ndarray
    delivered: dict[str, float]
    requested: dict[str, float]
    guaranteed: dict[str, float]
    changes: dict[str, int]
    plan_s: list[float] = field(default_factory=list)
    asleep: int = 0

    @property
    def over_kw(self) -> np.ndarray:
        return np.maximum(0.0, self.total_kw - self.limit_kw)

    @property
    def max_over_kw(self) -> float:
        return float(self.over_kw.max(initial=0.0))

    @property
    def kwh_over(self) -> float:
        return float(self.over_kw.sum() * SLOT_H)

    @property
    def delivered_kwh(self) -> float:
        return float(sum(max(0.0, v) for v in self.delivered.values()))

    @property
    def requested_kwh(self) -> float:
        return float(sum(self.requested.values()))

    @property
    def served_share(self) -> float:
        if not self.requested:
            return 1.0
        return sum(self.delivered[k] >= self.requested[k] - SERVED_TOLERANCE_KWH for k in self.requested) / len(
            self.requested)

    @property
    def all_served(self) -> bool:
        return all(self.delivered[k] >= self.requested[k] - SERVED_TOLERANCE_KWH for k in self.requested)

    @property
    def guarantee_violations(self) -> int:
        return sum(self.delivered[k] < self.guaranteed[k] - SERVED_TOLERANCE_KWH for k in self.guaranteed)

    @property
    def changes_per_session(self) -> float:
        return float(np.mean(list(self.changes.values()))) if self.changes else 0.0


def simulate(day: Day, policy: Policy, name: str, *, horizon_slots: int | None = None,
             allow_pause: bool = True) -> Outcome:
    """Online rolling horizon: at every slot, plan the sessions present with what is left, apply slot 0.

    A car that cannot resume after a pause (or any car when `allow_pause` is False) and is given
    0 A while it still wants energy falls asleep: it takes nothing more in that session
    (discharging is not a pause).
    """
    n = day.n_slots
    remaining = {s.sid: s.need_kwh for s in day.sessions}
    delivered = dict.fromkeys(remaining, 0.0)
    dischargeable = {s.sid: s.dischargeable_kwh for s in day.sessions}
    last_a: dict[str, float] = {}
    changes = dict.fromkeys(remaining, 0)
    asleep: set[str] = set()
    ev_kw = np.zeros(n)
    plan_s: list[float] = []
    last_departure = max((s.departure for s in day.sessions), default=0)
    for t in range(min(n, last_departure)):
        present = [s for s in day.sessions if s.arrival <= t < s.departure and s.sid not in asleep
                   and (remaining[s.sid] > EPS or (s.v2g and dischargeable[s.sid] > EPS))]
        if not present:
            continue
        horizon = max(s.departure for s in present) - t
        if horizon_slots is not None:
            horizon = min(horizon, horizon_slots)
        horizon = max(1, min(horizon, n - t))
        needs = [SessionNeed(
            session_id=s.sid, phases=s.phases, min_current_a=s.min_a, max_current_a=s.max_a,
            energy_needed_kwh=max(0.0, remaining[s.sid]),
            guaranteed_kwh=max(0.0, min(remaining[s.sid], s.guaranteed_kwh - delivered[s.sid])),
            departure_s=(s.departure - t) * SLOT_S, can_pause=s.can_pause and allow_pause, v2g=s.v2g,
            max_discharge_kw=s.max_discharge_kw, dischargeable_kwh=max(0.0, dischargeable[s.sid]))
            for s in present]
        inp = PlanInput(sessions=needs, limit_kw=day.limit_kw[t:t + horizon].tolist(),
                        base_load_kw=day.base_kw[t:t + horizon].tolist(), slot_s=SLOT_S)
        started = time.perf_counter()
        result = policy(inp)
        plan_s.append(time.perf_counter() - started)
        for s in present:
            sp = result.sessions[s.sid]
            amps = float(sp.current_a[0])
            kw = amps * s.kw_per_a
            if kw >= 0:
                kwh = min(kw * SLOT_H, max(0.0, remaining[s.sid]))
            else:
                kwh = -min(-kw * SLOT_H, dischargeable[s.sid])
                dischargeable[s.sid] += kwh
            remaining[s.sid] -= kwh
            delivered[s.sid] += kwh
            ev_kw[t] += kwh / SLOT_H
            prev = last_a.get(s.sid)
            if prev is not None and abs(prev - amps) > 0.05:
                changes[s.sid] += 1
            last_a[s.sid] = amps
            if amps == 0.0 and remaining[s.sid] > EPS and (not s.can_pause or not allow_pause):
                asleep.add(s.sid)
    return Outcome(name, ev_kw, ev_kw + day.base_kw, day.limit_kw.copy(), delivered,
                   {s.sid: s.need_kwh for s in day.sessions}, {s.sid: s.guaranteed_kwh for s in day.sessions},
                   changes, plan_s, len(asleep))


def optimum_day(day: Day) -> Outcome:
    """The offline optimum with perfect knowledge: an LP over every session's presence window.

    Same objective and relaxations as `profiles.optimum` (guaranteed energy first, then total; no
    0-6 A gap, no rounding, no "cannot resume" rule), extended by arrival times, which that
    function's input has no field for. Charging only: the instances here keep the limit above the
    base load, where discharging cannot add delivered energy.
    """
    ss = day.sessions
    n_s, n_t = len(ss), day.n_slots
    rows_i, cols_t = [], []
    for i, s in enumerate(ss):
        for t in range(s.arrival, min(s.departure, n_t)):
            rows_i.append(i)
            cols_t.append(t)
    p_i, p_t = np.asarray(rows_i, dtype=int), np.asarray(cols_t, dtype=int)
    n_p = p_i.size
    off_g, off_c, off_slack = n_p, n_p + n_s, n_p + 2 * n_s
    n_var = off_slack + n_t
    need = np.array([s.need_kwh for s in ss])
    guar = np.array([s.guaranteed_kwh for s in ss])
    pmax = np.array([s.max_kw for s in ss])
    bounds = np.zeros((n_var, 2))
    bounds[:n_p, 1] = pmax[p_i] if n_p else 0
    bounds[off_g:off_c, 1] = guar
    bounds[off_c:off_slack, 1] = np.maximum(need - guar, 0)
    bounds[off_slack:, 1] = np.inf
    cost = np.zeros(n_var)
    cost[:n_p] = 1e-6
    cost[off_g:off_c] = -1000.0
    cost[off_c:off_slack] = -1.0
    cost[off_slack:] = 1e7
    # capacity: sum_i p[i,t] - slack_t <= limit_t - base_t
    r1 = np.concatenate([p_t, np.arange(n_t)])
    c1 = np.concatenate([np.arange(n_p), off_slack + np.arange(n_t)])
    v1 = np.concatenate([np.ones(n_p), -np.ones(n_t)])
    # energy: g + c - sum_t p h <= 0 ; sum_t p h <= need
    r2 = np.concatenate([n_t + p_i, n_t + np.arange(n_s), n_t + np.arange(n_s), n_t + n_s + p_i])
    c2 = np.concatenate([np.arange(n_p), off_g + np.arange(n_s), off_c + np.arange(n_s), np.arange(n_p)])
    v2 = np.concatenate([-SLOT_H * np.ones(n_p), np.ones(n_s), np.ones(n_s), SLOT_H * np.ones(n_p)])
    a_ub = coo_matrix((np.concatenate([v1, v2]), (np.concatenate([r1, r2]), np.concatenate([c1, c2]))),
                      shape=(n_t + 2 * n_s, n_var)).tocsr()
    b_ub = np.concatenate([day.limit_kw - day.base_kw, np.zeros(n_s), need])
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if res.status != 0 or res.x is None:
        raise RuntimeError(f"optimum LP failed: {res.message}")
    x = res.x
    ev_kw = np.zeros(n_t)
    np.add.at(ev_kw, p_t, x[:n_p])
    got = np.zeros(n_s)
    np.add.at(got, p_i, x[:n_p] * SLOT_H)
    delivered = {s.sid: float(min(got[i], s.need_kwh)) for i, s in enumerate(ss)}
    return Outcome("optimum", ev_kw, ev_kw + day.base_kw, day.limit_kw.copy(), delivered,
                   {s.sid: s.need_kwh for s in ss}, {s.sid: s.guaranteed_kwh for s in ss}, dict.fromkeys(delivered, 0))


def make_day(sessions: Sequence[Sess], capacity_kw: float, base_peak_kw: float, *, start_hour: float = 14.0,
             windows: Sequence[tuple[float, float, float]] = ()) -> Day:
    """A two-day horizon with the residential base load; `windows` = (from hour, to hour, limit kW)
    applied every day (a capacity-limiting contract or a redispatch bid)."""
    n = 2 * DAY_SLOTS
    limit = np.full(n, float(capacity_kw))
    hours = (start_hour + np.arange(n) * SLOT_H) % 24.0
    for lo, hi, kw in windows:
        limit[(hours >= lo) & (hours < hi)] = kw
    return Day(list(sessions), limit, base_load(base_peak_kw, n, start_hour), start_hour)


def resume_rule_bound_day(day: Day, *, time_limit_s: float = 60.0) -> tuple[float, float, bool]:
    """The most energy any plan with perfect knowledge can deliver over the day when a car that
    does not resume stays off once given 0 A while it still wants energy (the rule the online
    run applies, which `optimum_day` relaxes): (proven upper bound kWh, best plan found kWh,
    proven optimal). A mixed-integer programme (HiGHS): per such car a binary "still going"
    per slot of its stay, not increasing; while going it draws at least its minimum. Energy only
    (guarantees may be given up), no 0-6 A gap for the others, no 0.1 A steps: an upper bound
    for every realisable online or offline policy."""
    from scipy.optimize import Bounds as SciBounds
    from scipy.optimize import LinearConstraint, milp

    ss = day.sessions
    n_s, n_t = len(ss), day.n_slots
    cells = [(i, t) for i, s in enumerate(ss) for t in range(s.arrival, min(s.departure, n_t))]
    p_i = np.asarray([c[0] for c in cells], dtype=int)
    p_t = np.asarray([c[1] for c in cells], dtype=int)
    n_p = p_i.size
    stiff = np.asarray([not s.can_pause for s in ss])
    z_cells = np.flatnonzero(stiff[p_i])  # one binary per cell of a car that does not resume
    n_z = z_cells.size
    off_e, off_z = n_p, n_p + n_s
    n_var = off_z + n_z
    pmax = np.array([s.max_kw for s in ss])
    pmin = np.array([s.min_a * s.kw_per_a for s in ss])
    need = np.array([s.need_kwh for s in ss])
    lb, ub = np.zeros(n_var), np.zeros(n_var)
    ub[:n_p] = pmax[p_i]
    ub[off_e:off_z] = need
    ub[off_z:] = 1.0
    rows, cols, vals = [], [], []
    lo, hi = [], []
    r = 0
    # capacity per slot
    rows += list(p_t)
    cols += list(range(n_p))
    vals += [1.0] * n_p
    lo += [-np.inf] * n_t
    hi += list(day.limit_kw - day.base_kw)
    r += n_t
    # E_i <= sum_t p h
    rows += list(r + p_i) + list(r + np.arange(n_s))
    cols += list(range(n_p)) + list(off_e + np.arange(n_s))
    vals += [-SLOT_H] * n_p + [1.0] * n_s
    lo += [-np.inf] * n_s
    hi += [0.0] * n_s
    r += n_s
    # stiff cells: pmin z <= p <= pmax z; z[t+1] <= z[t]
    for k, c in enumerate(z_cells.tolist()):
        i = int(p_i[c])
        rows += [r, r, r + 1, r + 1]
        cols += [c, off_z + k, c, off_z + k]
        vals += [1.0, -float(pmax[i]), 1.0, -float(pmin[i])]
        lo += [-np.inf, 0.0]
        hi += [0.0, np.inf]
        r += 2
        if k + 1 < n_z and int(p_i[z_cells[k + 1]]) == i:
            rows += [r, r]
            cols += [off_z + k + 1, off_z + k]
            vals += [1.0, -1.0]
            lo.append(-np.inf)
            hi.append(0.0)
            r += 1
    a = coo_matrix((vals, (rows, cols)), shape=(r, n_var)).tocsr()
    cost = np.zeros(n_var)
    cost[off_e:off_z] = -1.0
    integrality = np.zeros(n_var)
    integrality[off_z:] = 1
    res = milp(cost, constraints=LinearConstraint(a, np.asarray(lo), np.asarray(hi)), bounds=SciBounds(lb, ub),
               integrality=integrality, options={"time_limit": time_limit_s, "mip_rel_gap": 1e-4})
    best = -float(res.fun) if res.x is not None and res.fun is not None else 0.0
    dual = getattr(res, "mip_dual_bound", None)
    if dual is None or not np.isfinite(dual):
        if res.status != 0:
            raise RuntimeError(f"HiGHS gave no bound: {res.message}")
        return best, best, True
    return max(best, -float(dual)), best, res.status == 0

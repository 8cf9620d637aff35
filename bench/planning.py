"""Part 3, planning quality: the online planner against textbook heuristics and the exact optimum.

In process, no network, far faster than real time. Simulated days of sessions (the simulator's
residential scenario, several seeds) under one transformer with a residential base load, at three
congestion levels; every policy runs the same rolling horizon (re-plan every 15 minutes with only
the sessions that have arrived); the optimum is the LP over the whole day with perfect knowledge.
Planning time is measured on snapshot instances of 100, 1,000 and 10,000 sessions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import daymodel as dm
from bench.loadgen import Progress
from bench.plots import figure, save
from bench.report import Section, Table, ratio, verdict
from profiles.baselines import BASELINES
from profiles.optimum import optimum
from profiles.planner import PlanInput, SessionNeed, immediate_cut, plan

POLICIES = {"planner": plan, **BASELINES}


@dataclass(frozen=True)
class Level:
    name: str
    charge_points: int
    capacity_kw: float
    base_peak_kw: float


@dataclass(frozen=True)
class PlanningSettings:
    levels: tuple[Level, ...] = (Level("moderate", 80, 250, 200), Level("heavy", 200, 200, 170),
                                 Level("severe", 300, 160, 140))
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    sizes: tuple[int, ...] = (100, 1000, 10000)
    optimum_max_size: int = 10000
    timing_repeats: int = 3
    horizon_slots: int = 32


FULL = PlanningSettings()
SMOKE = PlanningSettings(levels=(Level("heavy", 60, 80, 60),), seeds=(1,), sizes=(100, 300),
                         optimum_max_size=300, timing_repeats=1)


def snapshot_instance(n: int, n_slots: int, seed: int = 7) -> PlanInput:
    """`n` sessions all plugged in now, mixed cars, a limit at ~35 % of their combined maximum."""
    rng = np.random.default_rng(seed)
    needs = []
    total_max = 0.0
    for i in range(n):
        phases = int(rng.choice([1, 3], p=[0.25, 0.75]))
        max_a = float(rng.choice([16.0, 32.0]))
        dep = float(rng.integers(4, n_slots + 1)) * dm.SLOT_S
        need = float(rng.uniform(2, 40))
        total_max += max_a * phases * 0.23
        needs.append(SessionNeed(f"s{i}", phases=phases, max_current_a=max_a, energy_needed_kwh=need,
                                 guaranteed_kwh=min(need, dm.GUARANTEED_KWH), departure_s=dep,
                                 can_pause=bool(rng.uniform() > 0.2)))
    base = dm.base_load(0.3 * total_max, n_slots).tolist()
    limit = [b + 0.35 * total_max for b in base]
    return PlanInput(needs, limit, base, slot_s=dm.SLOT_S)


def _best_time(fn: Any, inp: PlanInput, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(inp)
        best = min(best, time.perf_counter() - t0)
    return best


async def run(settings: PlanningSettings, out_dir: Path, say: Progress) -> Section:
    started = time.monotonic()
    quality: dict[str, dict[str, list[dm.Outcome]]] = {}
    example: dict[str, dm.Outcome] = {}
    for level in settings.levels:
        quality[level.name] = {name: [] for name in [*POLICIES, "optimum"]}
        for seed in settings.seeds:
            sessions = dm.sessions_from_scenario(dm.scenario(seed=seed), level.charge_points)
            day = dm.make_day(sessions, level.capacity_kw, level.base_peak_kw)
            quality[level.name]["optimum"].append(dm.optimum_day(day))
            for name, policy in POLICIES.items():
                quality[level.name][name].append(dm.simulate(day, policy, name))
            if seed == settings.seeds[0] and level == settings.levels[-1]:
                example = {name: runs[-1] for name, runs in quality[level.name].items()}
            q = quality[level.name]
            say(f"{level.name} seed {seed}: {len(sessions)} sessions, planner "
                f"{q['planner'][-1].delivered_kwh:.0f} kWh vs optimum {q['optimum'][-1].delivered_kwh:.0f} kWh")
    timing: list[dict[str, Any]] = []
    for n in settings.sizes:
        inp = snapshot_instance(n, settings.horizon_slots)
        row: dict[str, Any] = {"n": n}
        reps = settings.timing_repeats if n <= 1000 else 1
        row["plan"] = _best_time(plan, inp, reps)
        row["immediate_cut"] = _best_time(immediate_cut, inp, reps)
        row["llf"] = _best_time(BASELINES["llf"], inp, reps)
        row["optimum"] = _best_time(optimum, inp, 1) if n <= settings.optimum_max_size else float("nan")
        timing.append(row)
        say(f"{n:,} sessions x {settings.horizon_slots} slots: plan {row['plan'] * 1000:.0f} ms, "
            f"immediate cut {row['immediate_cut'] * 1000:.0f} ms, LP optimum {row['optimum'] * 1000:.0f} ms")
    section = _section(settings, quality, timing, example, out_dir)
    section.seconds = time.monotonic() - started
    return section


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def _section(s: PlanningSettings, quality: dict[str, dict[str, list[dm.Outcome]]], timing: list[dict[str, Any]],
             example: dict[str, dm.Outcome], out_dir: Path) -> Section:
    sec = Section("planning", "3. Planning quality: planner vs heuristics vs the exact optimum")
    sec.intro = (f"Residential scenario (`simulators/scenarios/residential_evening.yaml`), seeds "
                 f"{', '.join(map(str, s.seeds))}, one transformer with the residential base load of "
                 "bench/daymodel.py, 15-minute slots. Online policies re-plan every slot with only the sessions "
                 "that have arrived and apply the first slot; the optimum is an LP over the whole day with "
                 "perfect knowledge (an upper bound: it ignores the 0-6 A gap and rounding). A car that cannot "
                 "resume after a pause and is given 0 A takes nothing more in that session. Figures are means "
                 "over the seeds; \"vs optimum\" is delivered energy as a share of the optimum's.")
    cols = ["level", "policy", "max kW over limit", "kWh over limit", "% energy delivered", "% sessions served",
            "guarantee violations", "vs optimum", "profile changes / session", "cars asleep"]
    rows = []
    worst_gap = 1.0
    worst_over = 0.0
    for level in s.levels:
        q = quality[level.name]
        opt = _mean([o.delivered_kwh for o in q["optimum"]])
        for name in ["optimum", *POLICIES]:
            runs = q[name]
            share = _mean([o.delivered_kwh / o.requested_kwh for o in runs]) * 100
            vs = ratio(_mean([o.delivered_kwh for o in runs]), opt)
            rows.append([f"{level.name} ({level.charge_points} CPs, {level.capacity_kw:g} kW)", name,
                         max(o.max_over_kw for o in runs), _mean([o.kwh_over for o in runs]), share,
                         _mean([o.served_share for o in runs]) * 100, _mean([o.guarantee_violations for o in runs]),
                         vs, _mean([o.changes_per_session for o in runs]) if name != "optimum" else None,
                         _mean([o.asleep for o in runs]) if name != "optimum" else None])
            if name == "planner":
                worst_gap = min(worst_gap, min(ratio(o.delivered_kwh, b.delivered_kwh)
                                               for o, b in zip(runs, q["optimum"])))
                worst_over = max(worst_over, max(o.max_over_kw for o in runs))
    sec.tables.append(Table("Outcome per policy (means over seeds; max kW over limit is the worst seed)", cols, rows))
    trows = []
    for row in timing:
        trows.append([row["n"], row["plan"] * 1000, row["immediate_cut"] * 1000, row["llf"] * 1000,
                      row["optimum"] * 1000, ratio(row["optimum"], row["plan"])])
    sec.tables.append(Table(f"Planning time (ms, best of {s.timing_repeats} up to 1,000 sessions), "
                            f"{s.horizon_slots} slots, all sessions present",
                            ["sessions", "plan", "immediate_cut", "llf", "LP optimum", "optimum / plan"], trows))
    sec.verdicts.append(verdict("zero energy above the limit", worst_over <= 1e-6,
                                f"planner's worst overshoot {worst_over:.3g} kW"))
    sec.verdicts.append(verdict(">= 99.5 % of the optimum's delivered energy", worst_gap >= 0.995,
                                f"worst day {worst_gap:.2%} of the optimum"))
    t1000 = next((r["plan"] for r in timing if r["n"] == 1000), None)
    if t1000 is not None:
        sec.verdicts.append(verdict("planning 1,000 sessions in < 100 ms", t1000 < 0.1, f"{t1000 * 1000:.0f} ms"))
    if example:
        sec.figures.append(("Load over one day (most congested level, first seed)",
                            _day_plot(example, out_dir / "planning_day.png")))
    sec.data = {"quality": quality, "timing": timing, "worst_gap": worst_gap, "worst_over": worst_over}
    return sec


def _day_plot(example: dict[str, dm.Outcome], path: Path) -> Path:
    fig, ax = figure(7.0, 3.6)
    any_run = next(iter(example.values()))
    active = [int(np.max(np.nonzero(np.abs(o.ev_kw) > 1e-6)[0], initial=0)) for o in example.values()]
    n = min(any_run.total_kw.size, max(active, default=95) + 5)
    hours = 14 + np.arange(n) * dm.SLOT_H
    base = any_run.total_kw[:n] - any_run.ev_kw[:n]
    ax.plot(hours, any_run.limit_kw[:n], color="black", lw=1.2, label="limit")
    ax.fill_between(hours, 0, base, color="lightgrey", label="base load", step="post")
    for name, style in (("uncontrolled", "r-"), ("llf", "c--"), ("planner", "b-"), ("optimum", "g:")):
        if name in example:
            ax.step(hours, example[name].total_kw[:n], style, where="post", lw=1, label=name)
    ax.set_xlabel("hour of day (24+ = next day)")
    ax.set_ylabel("transformer load kW")
    ax.legend(fontsize=7, ncol=3)
    return save(fig, path)

"""The study as documents: docs/study.md (everything, with sources) and the study section of
bench/RESULTS.md (headline table, verdicts, figures), plus the PNG figures.

Every verdict goes through `bench.daymodel.judge`: "met" only when all its criteria hold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.daymodel import SERVED_MIN, Criterion, grid_criteria, judge
from bench.plots import figure, save
from bench.report import Section, Table
from bench.study import inputs
from bench.study.capacity import Capacity
from bench.study.fleet import ARRIVAL_SHAPE, CAR_MIX, Calibration, calibrate
from bench.study.inputs import DAY_SLOTS, SLOT_H
from bench.study.parts import (
    ALL_RESUME,
    WINDOW,
    Contract,
    Hosting,
    LPCheck,
    Redispatch,
    Sensitivity,
    Tariffs,
)
from bench.study.scenario import VARIANTS, Neighbourhood

WHITEPAPER_HOSTING = {"uncontrolled": 15, "smart (no pause)": 40, "smart + pause": 100}
WHITEPAPER_BID_RANGE = {"smart + pause": (150, 200), "smart + pause + V2G": (75, 100)}
TOLERANCE = 0.30  # "within +-30 %"
SECTION_TITLE = "5. Study: the whitepaper's numbers under documented Dutch assumptions"


@dataclass
class Results:
    hood: Neighbourhood
    hosting: Hosting
    rows: list[Sensitivity]
    sensitivity: dict[tuple[str, str], Capacity]
    contract: Contract
    redispatch: Redispatch
    tariffs: Tariffs
    bid_weeks: int
    lp_checks: list[LPCheck]
    seconds: float = 0.0
    cpu_seconds: float = 0.0


# Verdicts ---------------------------------------------------------------------------------------------


def hosting_verdicts(r: Results) -> list[str]:
    caps = r.hosting.capacities
    out = []
    for v in VARIANTS:
        c, wp = caps[v], WHITEPAPER_HOSTING[v]
        ratio = (c.capacity or 0) / wp
        out.append(judge(f"hosting capacity {v} within +-30 % of the whitepaper's {wp}", [
            Criterion("measured (the search reached a failing point)", c.measured,
                      f"first failure at {c.first_fail}" if c.first_fail else "no failure found"),
            Criterion("within +-30 %", c.measured and abs(ratio - 1) <= TOLERANCE, f"{c.label()} = {ratio:.2f} x")]))
    measured = all(caps[v].measured for v in VARIANTS)
    order = [caps[v].capacity or 0 for v in VARIANTS]
    out.append(judge("order uncontrolled < smart (no pause) < smart + pause", [
        Criterion("all three measured", measured, "yes" if measured else "no"),
        Criterion("order", order[0] < order[1] < order[2], " / ".join(map(str, order)))]))
    return out


def contract_verdicts(r: Results) -> list[str]:
    c = r.contract
    feas, below = c.feasible, c.below_base
    unc = feas.window_stats("uncontrolled")["mean_ev_kw"]
    out = []
    for v in ("smart (no pause)", "smart + pause", ALL_RESUME):
        s = feas.window_stats(v)
        crit = [Criterion("mean EV load 17-20 at most 10 % of uncontrolled", s["mean_ev_kw"] <= 0.1 * unc,
                          f"{s['mean_ev_kw']:.1f} kW vs {unc:.1f} kW uncontrolled")]
        crit += grid_criteria(max(s["max_over_kw"], s["over_day_kw"]), s["served"], int(s["guarantee_violations"]))
        out.append(judge(f"feasible contract {feas.contract_kw:g} kW 17-20 (above the base load): {v} brings the "
                         "EV load to about zero", crit))
    for case, label in ((feas, "feasible"), (below, "below-base-load")):
        s = case.window_stats("smart + pause + V2G")
        crit = [Criterion("mean EV load 17-20 below zero", s["mean_ev_kw"] < 0, f"{s['mean_ev_kw']:.1f} kW")]
        crit += grid_criteria(max(s["max_over_kw"], s["over_day_kw"]), s["served"], int(s["guarantee_violations"]))
        out.append(judge(f"{label} contract {case.contract_kw:g} kW 17-20: V2G makes the EV load negative", crit))
    return out


def redispatch_verdicts(r: Results) -> list[str]:
    out = []
    for v, (lo, hi) in WHITEPAPER_BID_RANGE.items():
        p = r.redispatch.needed.get(v)
        n = p.n if p else None
        out.append(judge(f"{v}: charge points needed for a {r.redispatch.bid_kw:g} kW bid in every ISP of 17-20 within the "
                         f"whitepaper's {lo}-{hi} (+-30 %)", [
            Criterion("a fleet size holds the bid on every day (guarantees kept, no overload, >= 99 % served)",
                      p is not None, f"{n} charge points" if n else "none found"),
            Criterion("within range", n is not None and lo * (1 - TOLERANCE) <= n <= hi * (1 + TOLERANCE),
                      f"{n} vs {lo}-{hi}")]))
    return out


def tariff_verdicts(r: Results) -> list[str]:
    runs = {t.name.split(" (")[0]: t for t in r.tariffs.runs}
    unc_peak = runs["uncontrolled"].peak(True)[0]
    price = runs["price-driven"]
    sec_peak, sec_hour = price.peak(False)
    out = [judge("price-driven charging creates a secondary peak higher than the evening peak it avoids", [
        Criterion("highest load outside 17-20 above the uncontrolled 17-20 peak", sec_peak > unc_peak,
                  f"{sec_peak:.0f} kW at {sec_hour:05.2f} h vs {unc_peak:.0f} kW")])]
    for name in ("grid-aware", "price + grid"):
        t = runs[name]
        out.append(judge(f"{name} charging keeps the transformer limit", grid_criteria(t.max_over_kw, t.served)))
    return out


# Tables -------------------------------------------------------------------------------------------------


def _points(c: Capacity) -> str:
    return ", ".join(f"{p.n}{'' if p.hosted else ' x'}" for p in c.points)


def headline_table(r: Results) -> Table:
    caps = r.hosting.capacities
    rows: list[list[object]] = []
    for v in VARIANTS:
        rows.append([f"hosting capacity, {v}", WHITEPAPER_HOSTING[v], caps[v].label(),
                     (caps[v].capacity or 0) / WHITEPAPER_HOSTING[v] if caps[v].measured else None])
    rows.append(["hosting, uncontrolled by the design rule (all at full power at the base-load peak)", 15,
                 r.hosting.design_rule, r.hosting.design_rule / 15])
    feas = r.contract.feasible
    below = r.contract.below_base
    rows.append([f"EV load 17-20 under a {feas.contract_kw:g} kW contract, smart + pause (mean kW)", "~0",
                 feas.window_stats("smart + pause")["mean_ev_kw"], None])
    rows.append([f"EV load 17-20 under a {below.contract_kw:g} kW contract (below the base load), V2G (mean kW)",
                 "< 0", below.window_stats("smart + pause + V2G")["mean_ev_kw"], None])
    for v, (lo, hi) in WHITEPAPER_BID_RANGE.items():
        p = r.redispatch.needed.get(v)
        rows.append([f"charge points for a {r.redispatch.bid_kw:g} kW bid 17-20, {v}", f"{lo}-{hi}",
                     p.n if p else "none found", (p.n / ((lo + hi) / 2)) if p else None])
    runs = {t.name.split(" (")[0]: t for t in r.tariffs.runs}
    sec_peak, sec_hour = runs["price-driven"].peak(False)
    rows.append(["price-driven charging: secondary peak (kW at the transformer, outside 17-20)",
                 "higher than the peak removed", (f"{sec_peak:.0f} kW at {sec_hour:05.2f} h "
                 f"(uncontrolled 17-20 peak {runs['uncontrolled'].peak(True)[0]:.0f} kW)"), None])
    return Table("Headline: this study vs the whitepaper", ["question", "whitepaper", "this study",
                                                            "ratio to whitepaper"], rows)


def hosting_table(r: Results) -> Table:
    rows = []
    for v in VARIANTS:
        c = r.hosting.capacities[v]
        best = max((p for p in c.points if p.hosted and p.n == c.capacity), key=lambda p: p.n, default=None)
        fail = next((p for p in c.points if p.n == c.first_fail), None)
        rows.append([v, c.label(), c.first_fail, WHITEPAPER_HOSTING[v],
                     f"{best.served_share:.2%}" if best else "-",
                     (f"{fail.served_share:.2%} served, {fail.max_over_kw:.0f} kW over ({fail.stopped or 'full run'})"
                      if fail else "-"), _points(c)])
    return Table("Hosting capacity (charge points; x = not hosted)",
                 ["variant", "capacity", "first failing point", "whitepaper", "served at capacity",
                  "at the first failing point", "points simulated"], rows)


def sensitivity_table(r: Results) -> Table:
    base = r.hosting.capacities
    rows: list[list[object]] = [["base case (see assumptions)", *[base[v].label() for v in VARIANTS], ""]]
    for row in r.rows:
        cells: list[object] = [row.label]
        moves = []
        for v in VARIANTS:
            c = r.sensitivity.get((row.label, v))
            if c is None:
                cells.append("= base")
                continue
            b = base[v].capacity
            change = ((c.capacity or 0) / b - 1) if (b and c.measured) else None
            cells.append(c.label() + (f" ({change:+.0%})" if change is not None else ""))
            if change is not None:
                moves.append(f"{v} {change:+.0%}")
        cells.append(", ".join(moves))
        rows.append(cells)
    return Table("Sensitivity: hosting capacity when one assumption changes (charge points; change vs base)",
                 ["assumption changed", *VARIANTS, "moves"], rows)


def contract_tables(r: Results) -> list[Table]:
    out = []
    for case, what in ((r.contract.feasible, "feasible: above the base load in every ISP"),
                       (r.contract.below_base, "below the base load in every ISP")):
        rows = []
        for v in case.runs:
            s = case.window_stats(v)
            rows.append([v, s["mean_ev_kw"], s["room_kw"], s["min_ev_kw"], s["max_ev_kw"],
                         s["max_over_kw"], s["over_day_kw"], s["served"] * 100, int(s["guarantee_violations"]),
                         int(s["asleep"]), int(s["unserved_leaving_17_21"])])
        out.append(Table(f"Contract {case.contract_kw:g} kW from 17:00 to 20:00 ({what}; base load in the window "
                         f"{case.base_min_kw:.0f}-{case.base_max_kw:.0f} kW), {r.contract.charge_points} charge points",
                         ["variant", "mean EV kW 17-20", "room the contract leaves (mean kW; < 0: discharge)", "min EV kW",
                          "max EV kW", "max kW over the contract",
                          "max kW over any limit (whole day)", "% sessions served", "guarantee violations",
                          "cars asleep (paused, do not resume)", "not served, leaving 17-21 h"], rows))
    return out


def redispatch_table(r: Results) -> Table:
    rows = []
    for v, pts in r.redispatch.points.items():
        for p in pts:
            rows.append([v, p.n, f"{p.days_held}/{p.days}", p.least_reduction_kw, p.served * 100,
                         p.guarantee_violations, p.max_over_kw, "yes" if p.holds else "no"])
    return Table(f"{r.redispatch.bid_kw:g} kW redispatch bid, 17:00-20:00 every day for {r.bid_weeks} weeks (realised: the "
                 "same fleet without and with the bid)",
                 ["fleet", "charge points", "days held", "least reduction in any ISP (kW)", "% sessions served",
                  "guarantee violations", "max kW over the transformer", "holds"], rows)


def firm_flex_table(r: Results) -> Table:
    rows = []
    for v, pts in r.redispatch.at_whitepaper.items():
        for p in pts:
            f = np.asarray(p.firm_flex_kw) if p.firm_flex_kw else np.zeros(1)
            g = np.asarray(p.firm_first_isp_kw) if p.firm_first_isp_kw else np.zeros(1)
            rows.append([v, p.n, f"{p.days_held}/{p.days}", p.least_reduction_kw, float(np.median(f)),
                         int(np.count_nonzero(f >= r.redispatch.bid_kw - 1e-6)), float(g.min()), float(np.median(g)),
                         int(np.count_nonzero(g >= r.redispatch.bid_kw - 1e-6))])
    return Table("At the whitepaper's fleet sizes: realised bid, and the firm flexibility of the cars connected "
                 "at 17:00 (bench.study.flex.deliverable_flex, per day)",
                 ["fleet", "charge points", "days the bid held", "least realised reduction (kW)",
                  "firm flex 17-20, median (kW)", f"days >= {r.redispatch.bid_kw:g} kW",
                  "firm flex 17:00-17:15, least (kW)", "median (kW)", f"days >= {r.redispatch.bid_kw:g} kW"], rows)


def lp_table(r: Results) -> Table:
    rows = [[c.variant, c.n, c.weeks, c.heuristic_served * 100, c.auto_served * 100, c.heuristic_over_kw,
             c.auto_over_kw, c.heuristic_s, c.auto_s] for c in r.lp_checks]
    return Table("The LP check: the first failing point of each smart search, same sessions, planner heuristic vs "
                 "plan's default (LP refinement when it fits)",
                 ["variant", "charge points", "weeks", "% served, heuristic", "% served, LP", "max kW over, heuristic",
                  "max kW over, LP", "run s, heuristic", "run s, LP"], rows)


def tariff_table(r: Results) -> Table:
    rows = []
    for t in r.tariffs.runs:
        inside, _ = t.peak(True)
        outside, hour = t.peak(False)
        rows.append([t.name, max(inside, outside), inside, f"{outside:.0f} at {hour:05.2f} h", t.max_over_kw,
                     t.slots_over, t.diversity, t.served * 100, t.cost_eur_kwh * 100])
    return Table(f"Day-ahead prices vs grid limit, {r.tariffs.charge_points} charge points, {r.hood.weeks} weeks",
                 ["policy", "transformer peak kW", "peak 17-20 kW", "peak outside 17-20 (kW at h)",
                  "max kW over the limit", "quarter-hours over", "diversity factor", "% sessions served",
                  "mean day-ahead price paid (ct/kWh)"], rows)


def assumptions_table(hood: Neighbourhood, cal: Calibration) -> Table:
    f = hood.fleet
    base = hood.base_kw()
    rows = [
        ["transformer", f"{hood.transformer_kw:g} kW (400 kVA at unity power factor)",
         "whitepaper (one residential 400 kVA transformer)"],
        ["households behind it", f"{hood.households}", "whitepaper: about 150-200 households (we take the middle)"],
        ["household consumption", f"{hood.kwh_per_household:,.0f} kWh per year", inputs.HOUSEHOLD_KWH_SOURCE],
        ["base-load shape", "E1A quarter-hour shares, one January week repeated (Monday-Sunday)", inputs.E1A_SOURCE],
        ["base load that gives", (f"peak {base.max():.0f} kW (around 18:00), night {base.min():.0f} kW, "
                                 f"mean {base.mean():.0f} kW"), "computed"],
        ["DSO design base load (sensitivity)", f"{inputs.DSO_DESIGN_KW_PER_HOUSEHOLD} kW per household at the peak",
         inputs.DSO_DESIGN_SOURCE],
        ["sessions per charge point per day", f"{f.sessions_per_cp_day:g} (realised {cal.sessions_per_cp_day:.2f})",
         ("our choice: a public charge point is occupied 5-11 h a day (Nuon, 2018, cities with > 200 charge "
         "points) and a session lasts about 8 h (Vattenfall InCharge, 2025)")],
        ["sessions starting 17:00-21:00", f"{f.evening_share:.0%} (realised {cal.evening_share:.0%})",
         "Vattenfall InCharge 2025: one in three public sessions starts 17:00-21:00"],
        ["arrival shape within the day", "hourly weights " + ", ".join(f"{w:g}" for w in ARRIVAL_SHAPE)
         + " (00-23 h), evening hours rescaled to the share above", ("our assumption (the project's residential "
         "scenario)")],
        ["connection time", (f"mean {f.mean_dwell_h:g} h (realised {cal.mean_dwell_h:.1f} h); cars arriving after "
                            "16:00 leave next morning (7:45 +- 1 h), others after a lognormal stay "
                            f"(median {cal.day_dwell_median_h:.1f} h, calibrated)"),
         "Vattenfall InCharge 2025: about 8 h connected at a regular public charge point, charged within 4 h"],
        ["energy per session", (f"mean {f.mean_energy_kwh:g} kWh (realised {cal.mean_energy_kwh:.1f}), lognormal "
                               f"sigma {f.energy_sigma:g}"),
         "Allego (2019): the average public session grew from about 10 to 14.5 kWh; EVnetNL 2015: 8.4 kWh"],
        ["charge points", " / ".join(f"{a * 3 * 0.23:.0f} kW (3 x {a:g} A)" for a in f.cp_max_a) + ", alternating",
         "whitepaper: charge points of 17-22 kW"],
        ["cars", "; ".join(f"{c.share:.0%} {c.name} ({c.battery_kwh:g} kWh)" for c in CAR_MIX),
         "our assumption (the project's residential scenario)"],
        ["cars that do not resume after a pause", f"{f.noresume_share:.0%}",
         "our assumption; the whitepaper reports that some models do not resume (no share given)"],
        ["guaranteed minimum per session", f"{f.guarantee_kwh:g} kWh (or the whole need if smaller)",
         "the daemon's default (grid.session_defaults.guaranteed_kwh)"],
        ["V2G cars", (f"discharge up to {f.v2g_max_kw:g} kW, down to {f.v2g_min_soc:.0%} state of charge; arrive at "
                     f"{f.target_soc:.0%} minus their need"), "our assumption"],
        ["control", (f"the planner (profiles.planner.plan), re-planned every 15 minutes over {hood.horizon_slots} "
                    "slots, base load known"), "the daemon's defaults (grid.planning)"],
        ["simulated period", f"{hood.weeks} weeks after a warm-up day, 15-minute slots", "issue 19: at least 8 weeks"],
        ["day-ahead price", "hourly, one day repeated: " + ", ".join(f"{p * 100:.1f}"
                                                                    for p in inputs.DAY_AHEAD_EUR_KWH_2025_11_24)
         + " ct/kWh", inputs.DAY_AHEAD_SOURCE],
    ]
    return Table("Assumptions and their sources", ["what", "value", "source"], rows)


# Figures --------------------------------------------------------------------------------------------------


def _daily_profile(x: np.ndarray, count_from: int, how: str = "mean") -> np.ndarray:
    days = x[count_from:count_from + ((x.size - count_from) // DAY_SLOTS) * DAY_SLOTS].reshape(-1, DAY_SLOTS)
    return days.max(axis=0) if how == "max" else days.mean(axis=0)


def plot_hosting(r: Results, path: Path) -> Path:
    fig, _ = figure(7.0, 5.0)
    fig.clf()
    a1 = fig.add_subplot(2, 1, 1)
    a2 = fig.add_subplot(2, 1, 2, sharex=a1)
    for (v, c), style in zip(r.hosting.capacities.items(), ("r-o", "m-s", "b-^")):
        pts = sorted(c.points, key=lambda p: p.n)
        a1.plot([p.n for p in pts], [p.max_over_kw for p in pts], style, ms=3, label=v)
        a2.plot([p.n for p in pts], [p.served_share * 100 for p in pts], style, ms=3, label=v)
    for v, style in zip(VARIANTS, ("r", "m", "b")):
        a2.axvline(WHITEPAPER_HOSTING[v], color=style, ls=":", lw=0.8)
    a2.axhline(SERVED_MIN * 100, color="black", lw=0.6, ls="--")
    a1.set_ylabel("max kW over")
    a2.set_ylabel("% sessions served\n(stopped runs: so far)")
    a2.set_xlabel("charge points behind the transformer (dotted: whitepaper)")
    a1.legend(fontsize=7)
    a1.set_title(f"{r.hood.transformer_kw:g} kW, {r.hood.households} households, {r.hood.weeks} weeks", fontsize=9)
    return save(fig, path)


def plot_sensitivity(r: Results, path: Path) -> Path:
    fig, ax = figure(7.0, 4.2)
    labels = ["base", *[row.label.split(" (")[0][:38] for row in r.rows]]
    y = np.arange(len(labels))
    for k, (v, color) in enumerate(zip(VARIANTS, ("tab:red", "tab:purple", "tab:blue"))):
        vals = [r.hosting.capacities[v].capacity or 0]
        for row in r.rows:
            c = r.sensitivity.get((row.label, v), r.hosting.capacities[v])
            vals.append(c.capacity or 0)
        ax.barh(y + (k - 1) * 0.27, vals, height=0.26, color=color, label=v)
        ax.axvline(WHITEPAPER_HOSTING[v], color=color, ls=":", lw=0.9)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("hosting capacity (charge points; dotted: whitepaper)")
    ax.legend(fontsize=7)
    return save(fig, path)


def plot_contract(r: Results, path: Path) -> Path:
    fig, _ = figure(7.0, 4.6)
    fig.clf()
    hours = np.arange(DAY_SLOTS) * SLOT_H
    for k, case in enumerate((r.contract.feasible, r.contract.below_base)):
        ax = fig.add_subplot(2, 1, k + 1)
        ax.axvspan(*WINDOW, color="orange", alpha=0.15)
        for v, run in case.runs.items():
            ax.step(hours, _daily_profile(run.ev_kw, run.fleet.count_from), where="post", lw=1, label=v)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_ylabel("EV kW (mean day)")
        ax.set_title(f"contract {case.contract_kw:g} kW 17-20", fontsize=8)
        if k == 0:
            ax.legend(fontsize=6, ncol=2)
    fig.axes[-1].set_xlabel("hour of day")
    return save(fig, path)


def plot_tariffs(r: Results, path: Path) -> Path:
    fig, ax = figure(7.0, 3.8)
    hours = np.arange(DAY_SLOTS) * SLOT_H
    for t in r.tariffs.runs:
        ax.step(hours, _daily_profile(t.total_kw, t.count_from, "max"), where="post", lw=1, label=t.name)
    ax.axhline(r.hood.transformer_kw, color="black", lw=1, label="transformer limit")
    ax2 = ax.twinx()
    ax2.step(hours, inputs.day_ahead_slots() * 100, where="post", color="grey", ls=":", lw=1)
    ax2.set_ylabel("day-ahead ct/kWh (dotted)", fontsize=8)
    ax.set_xlabel("hour of day")
    ax.set_ylabel("highest transformer load kW")
    ax.legend(fontsize=6, loc="upper left")
    return save(fig, path)


# Documents -----------------------------------------------------------------------------------------------


def _account(r: Results) -> list[str]:
    """Which assumption moves which result, and by how much (from the sensitivity table)."""
    base = r.hosting.capacities
    lines = []
    for v in VARIANTS:
        b = base[v].capacity
        if not b or not base[v].measured:
            lines.append(f"{v}: the base capacity was not measured, so no change can be given.")
            continue
        moves = []
        for row in r.rows:
            c = r.sensitivity.get((row.label, v))
            if c is not None and c.measured and c.capacity is not None:
                moves.append(((c.capacity / b) - 1, row.label, c.capacity))
        moves.sort(key=lambda m: m[0])
        wp = WHITEPAPER_HOSTING[v]
        text = f"{v}: base {b} charge points ({b / wp:.1f} x the whitepaper's {wp})"
        if moves:
            text += "; " + "; ".join(f"{label}: {cap} ({ch:+.0%})" for ch, label, cap in moves)
        lines.append(text + ".")
    combined = r.rows[-1] if r.rows and r.rows[-1].label.startswith("all at once") else None
    if combined is not None:
        got = [r.sensitivity.get((combined.label, v)) for v in VARIANTS]
        if all(c is not None and c.measured for c in got):
            ratios = " / ".join(f"{(c.capacity or 0) / WHITEPAPER_HOSTING[v]:.1f} x"  # type: ignore[union-attr]
                                for c, v in zip(got, VARIANTS, strict=True))
            lines.append(f"With every heavier assumption at once ({combined.label.split(': ', 1)[-1]}): "
                         + " / ".join(c.label() for c in got if c is not None)
                         + f", that is {ratios} the whitepaper's 15 / 40 / 100.")
    return lines


def _contract_account(r: Results) -> str:
    feas, below = r.contract.feasible, r.contract.below_base
    sp, allr = feas.window_stats("smart + pause"), feas.window_stats(ALL_RESUME)
    v2g = below.window_stats("smart + pause + V2G")
    return (f"Under the feasible contract, smart + pause leaves {100 - sp['served'] * 100:.1f} % of the sessions "
            f"short: {int(sp['asleep'])} cars that do not resume were paused for lack of room for their minimum "
            f"current, and "
            f"{int(sp['unserved_leaving_17_21'])} short sessions left during or just after the window. With every "
            f"car able to resume, {100 - allr['served'] * 100:.1f} % are short. Below the base load, the V2G fleet "
            f"discharged {-v2g['mean_ev_kw']:.0f} kW on average where the contract needed {-v2g['room_kw']:.0f} kW.")


def _hosted_text(r: Results, n: int) -> str:
    inside = [v for v in VARIANTS if r.hosting.capacities[v].capacity is not None
              and n <= (r.hosting.capacities[v].capacity or 0)]
    if not inside:
        return "above every variant's hosting capacity without a contract"
    return "within the hosting capacity without a contract of: " + ", ".join(inside)


def section(r: Results, out_dir: Path) -> Section:
    sec = Section("study", SECTION_TITLE)
    sec.intro = ("`python -m bench study`: the whitepaper's headline numbers re-derived in simulation under "
                 "documented Dutch residential assumptions (each with its source in docs/study.md, which also "
                 "has the method, every table and the limits). Verdicts say met only when every criterion holds.")
    sec.verdicts = [*hosting_verdicts(r), *contract_verdicts(r), *redispatch_verdicts(r), *tariff_verdicts(r)]
    sec.tables = [headline_table(r), hosting_table(r), sensitivity_table(r)]
    sec.figures = [("Hosting capacity search", plot_hosting(r, out_dir / "study_hosting.png")),
                   ("Sensitivity", plot_sensitivity(r, out_dir / "study_sensitivity.png")),
                   ("Evening contract", plot_contract(r, out_dir / "study_contract.png")),
                   ("Day-ahead prices", plot_tariffs(r, out_dir / "study_tariffs.png"))]
    sec.notes = _account(r)
    sec.seconds = r.seconds
    sec.data = {"results": r}
    return sec


def study_markdown(r: Results, sec: Section, doc_path: Path, header: str) -> str:
    cal = calibrate(r.hood.fleet)
    rel = os.path.relpath

    def fig(i: int) -> str:
        caption, path = sec.figures[i]
        return f"![{caption}]({Path(rel(path, doc_path.parent)).as_posix()})"

    t_head, t_host, t_sens = sec.tables
    out = [
        "# Study: the whitepaper's numbers, reproduced under documented assumptions", "",
        header, "",
        ("The project started from a whitepaper of the Dutch ROBUST research project (\"Flexibiliteit op het "
        "elektriciteitsnet in stadsregio's\", Utrecht region, 2021-2025). Its headline numbers: one residential "
        "400 kVA transformer takes about 15 charge points of 17-22 kW uncontrolled, about 40 with smart charging "
        "and about 100 when charging may also pause; under an evening capacity contract smart charging brings the "
        "chargers' load to about zero and V2G makes it negative; a 100 kW redispatch bid takes 150-200 smart or "
        "75-100 bidirectional charge points; some dynamic tariffs create secondary peaks. This page re-derives "
        "each in simulation. Every verdict checks all its criteria (overload, share of sessions served, "
        "guarantees), never a mean alone, and says *met* only when all hold."), "",
        t_head.markdown(), "",
        "## Verdicts", "", *[f"- {v}" for v in sec.verdicts], "",
        "## Assumptions and sources", "",
        ("Facts from public sources are named; \"our assumption\" marks a round choice of ours (the sensitivity "
        "table varies the ones that matter). Nothing is fitted to the whitepaper's results. Sessions are "
        "calibrated: the generator's arrival rate, daytime stay and energy are tuned until the sessions that "
        "take place (a charge point holds one car at a time) match the targets; \"realised\" is what the "
        "simulated sessions show."), "",
        assumptions_table(r.hood, cal).markdown(), "",
        "## 1. Hosting capacity", "",
        (f"**Hosted** means: no 15-minute interval above the {r.hood.transformer_kw:g} kW limit in the "
        f"{r.hood.weeks} simulated weeks, and at least {SERVED_MIN:.0%} of the sessions fully served (the "
        "energy they asked for, within 0.05 kWh, by departure). Each variant's search grows the number of "
        "charge points until a point fails, then bisects between the last hosted and the first failing point; a "
        "run stops early once it can no longer be hosted (its served share is then the share so far). Charge "
        "point k sees the same sessions at every fleet size, so the points are nested. Variants: *uncontrolled* "
        "(every car at full power from arrival until full); *smart (no pause)* (the planner, but a car given 0 A "
        "falls asleep for the rest of its session, so in effect cars can only be throttled to their 6 A minimum); "
        "*smart + pause* (the planner may pause cars; the share of cars that do not resume fall asleep when "
        "paused)."), "",
        t_host.markdown(), "", fig(0), "",
        (f"The design rule (every charge point at its full power at the base-load peak) allows "
         f"{r.hosting.design_rule} charge points: (transformer - base-load peak) / mean charge point power, "
         f"against {r.hosting.capacities['uncontrolled'].label()} simulated over {r.hood.weeks} weeks, where "
         "sessions coincide only as often as the calibrated arrivals, stays and energies make them."), "",
        "### Sensitivity", "",
        t_sens.markdown(), "", fig(1), "",
        "What moves the result, and by how much:", "", *[f"- {line}" for line in _account(r)], "",
        "## 2. Evening capacity contract (17:00-20:00)", "",
        (f"{r.contract.charge_points} charge points ({_hosted_text(r, r.contract.charge_points)}); the contract "
         "caps the transformer's load from 17:00 to 20:00 every day. The feasible contract lies just above the "
         "base load in every quarter-hour of the window, so the chargers may draw only the small rest; the second "
         "lies below the base load, so only discharging can meet it. The planner discharges V2G cars only when "
         "the limit is below the base load (it does not move energy between cars), so under the feasible "
         "contract V2G cars behave like the others."), "",
        *[t.markdown() + "\n" for t in contract_tables(r)], fig(2), "",
        _contract_account(r), "",
        "## 3. Redispatch bid: 100 kW in every ISP of 17:00-20:00", "",
        ("The bid is measured the way a grid operator settles it: against the fleet's prognosis. For each fleet "
        "size the same sessions run twice under the transformer limit with the base load counted: once as they "
        "are (the baseline, which is the prognosis the aggregator would send), and once with the bid known "
        "day-ahead (the limit in each ISP of 17:00-20:00 set to base load + baseline - 100 kW). The bid *holds* "
        "when the second run stays under that limit in every ISP of every evening, keeps every guaranteed "
        "minimum, never overloads the transformer and serves at least 99 % of the sessions. V2G fleets have every "
        f"car bidirectional. The redispatch runs cover {r.bid_weeks} weeks (one bid every evening)."), "",
        ("The flexibility computation is a separate, pure function, `bench.study.flex.deliverable_flex` (a "
        "PlanInput of the connected fleet with its base load and limit, and a window of ISPs, in; the largest "
        "reduction held in every ISP with every guarantee kept, out). It asks the planner itself, so an offer it "
        "returns is one the controller can keep. The UFTP aggregator (FlexRequest -> FlexOffer, "
        "`csms/grid/sources/uftp/`) computes its offers analytically (`profiles/flex_offer.py`, no planner calls "
        "on the message path) and is checked against it: it never offers more than this function finds "
        "deliverable, beyond its 0.5 kW resolution (`tests/test_flex_offer.py`). **The UFTP end-to-end path is "
        "not yet used in this study**: no UFTP message is exchanged; the bid is applied as a limit, as a "
        "FlexOrder would be."), "",
        redispatch_table(r).markdown(), "", firm_flex_table(r).markdown(), "",
        ("The firm flexibility counts only the cars connected at 17:00 with what they still need: over the whole "
         "window it is bounded by its last ISP, when most of those cars are full; for the first ISP alone it is "
         "what the aggregator could promise at once. Cars arriving during the window add both load and "
         "flexibility, which only the realised runs include."), "",
        "## 4. Dynamic tariffs: price-driven vs grid-aware charging", "",
        ("*Price-driven*: every car, on arrival, books the cheapest quarter-hours before it leaves at its full "
        "power (earliest first among equal prices), as a price-optimising app would, with no grid limit. "
        "*Grid-aware*: the planner under the transformer limit, no prices. *Price + grid*: the same booking, "
        "but only in the room the transformer has left after the base load and the cars booked before (the "
        "planner has no price input, so this policy is the study's own greedy, not the planner). The diversity "
        "factor is the sum of the charge points' own peaks divided by the chargers' coincident peak (1 = all "
        "peak together)."), "",
        tariff_table(r).markdown(), "", fig(3), "",
        "## The planner's method", "",
        ("`profiles.planner.plan` has two methods: a heuristic, and an LP refinement (HiGHS) that it uses "
         "when the problem fits its size limit and its 1 s budget (the default, what the daemon sends). The "
         "LP costs about three times as much per call, so the capacity searches and the sensitivity use the "
         "heuristic (`plan(..., method=\"heuristic\")`), and the contract, redispatch and tariff parts use the "
         "default. This check runs both on the same sessions at each smart search's first failing point:"), "",
        lp_table(r).markdown(), "",
        "## Method and limits", "",
        ("- Discrete time, 15-minute slots, numpy; the planner is called through its public API "
        "(`profiles.planner.plan`) every slot with the cars present, as the daemon re-plans. When every car "
        "present fits at full current under the limit, the planner's answer is known (everyone at the most it "
        "can use) and it is not called; tests/test_bench_study.py checks that this gives identical results."),
        ("- Uncontrolled charging is computed in closed form (each car at its maximum until full); the test checks "
        "it against `profiles.baselines.uncontrolled` in the same rolling loop."),
        ("- The base load is known to the planner (no forecast error), one phase-balanced kW figure (no per-phase "
        "limit, no reactive power), one E1A week repeated: weather beyond that week's variation, holidays and "
        "heat pumps are not modelled; the base-load sensitivity shows what a heavier load does."),
        ("- Drivers do not change behaviour under control; a car that finds its charge point occupied is not "
        "counted; a session's energy is capped at what the car could take at full power during its stay."),
        f"- Redispatch runs cover {r.bid_weeks} weeks, the other parts {r.hood.weeks}.",
        (f"- The whole study ran in {r.seconds / 60:.1f} minutes of wall time and {r.cpu_seconds / 60:.1f} "
         "minutes of CPU time (all processes); the machine is shared, so the wall time depends on its load."), "",
    ]
    return "\n".join(out)


def splice_section(results_md: Path, sec: Section) -> None:
    """Put `sec` into RESULTS.md in place of the section with the same title (or at the end),
    leaving every other part's section as it is."""
    text = results_md.read_text(encoding="utf-8") if results_md.exists() else "# Benchmark results\n"
    body = sec.markdown(results_md.parent)
    head = f"## {sec.title}"
    start = text.find(head)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    else:
        nxt = text.find("\n## ", start + len(head))
        text = text[:start] + body + "\n" + (text[nxt + 1:] if nxt >= 0 else "")
    results_md.write_text(text, encoding="utf-8")


def keep_section(previous: str, results_md: Path, title: str = SECTION_TITLE) -> None:
    """After other parts rewrote RESULTS.md, put back a section they do not produce (the study's)."""
    head = f"## {title}"
    start = previous.find(head)
    if start < 0 or not results_md.exists():
        return
    text = results_md.read_text(encoding="utf-8")
    if head in text:
        return
    nxt = previous.find("\n## ", start + len(head))
    block = previous[start:nxt if nxt >= 0 else None].rstrip("\n")
    results_md.write_text(text.rstrip("\n") + "\n\n" + block + "\n", encoding="utf-8")


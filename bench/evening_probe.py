"""Why the busy evening sends the profiles it sends: the demo's evening (seed 7) with every push
classified by cause (cut, new session, or which hysteresis rule refused to keep the installed one).

``python -m bench.evening_probe [--seconds 120] [--stations 48] [--seed 7] [--json out.json]``

A diagnostic, not a benchmark: it patches the pusher's decision in process to record why, and
replays :meth:`Hysteresis.unchanged`'s reasoning to name the rule that forced each send.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import json
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from csms.grid.effects import pusher as pusher_mod
from csms.grid.effects.waves import WaveDispatcher
from profiles.hysteresis import Hysteresis, Setpoints, keep_within_budget


def why_not_kept(h: Hysteresis, old: Setpoints, new: Setpoints, now: datetime,
                 pushed_at: datetime | None) -> str:
    """Name the first rule by which ``h.unchanged`` refuses ``old`` (sampled, coarse)."""
    t_now = (now - new.start).total_seconds()
    o = (old.start - new.start).total_seconds()
    old_end, new_end = o + old.slot_s * len(old.current_a), new.slot_s * len(new.current_a)
    if h._runs_out(old_end - t_now, new_end - t_now, new.slot_s):
        return "runs_out"
    a_new, a_old = new.value_at(now), old.value_at(now)
    if a_new is None or a_old is None:
        return "no value now"
    for ahead in range(0, int(new_end - t_now), 30):
        at = t_now + ahead
        if h.defer_s is not None and ahead >= h.defer_s:
            break
        i, j = int(at // new.slot_s), int((at - o) // old.slot_s)
        if i >= len(new.current_a) or j < 0 or j >= len(old.current_a):
            continue
        v_new, v_old = new.current_a[i], old.current_a[j]
        where = "now" if ahead == 0 else ("near" if h.near_s is not None and ahead < h.near_s else "far")
        if (v_old == 0) != (v_new == 0):
            return f"pause/resume {where}"
        if (v_old < 0) != (v_new < 0):
            return f"discharge sign {where}"
        if abs(v_new - v_old) >= h.current_a:
            return f"{'up' if v_new > v_old else 'down'} {where}"
    return "other (boundary/step)"


class _Middle(Hysteresis):
    """Diagnostic only (not safe): the excess at each slot's middle, no peaks."""

    def excess_by_slot(self, old: Setpoints, new: Setpoints, now: datetime) -> tuple[float, ...]:
        kw = new.phases * 230 / 1000.0
        out = []
        for i, v in enumerate(new.current_a):
            at = new.start + (new.end - new.start) * ((i + 0.5) / len(new.current_a))
            o = old.value_at(at)
            out.append(0.0 if o is None or at < now else (o - v) * kw)
        return tuple(out)


class _Near(Hysteresis):
    """Diagnostic only (not safe): only the slots up to ``defer_s`` ahead are budgeted."""

    def excess_by_slot(self, old: Setpoints, new: Setpoints, now: datetime) -> tuple[float, ...]:
        full = super().excess_by_slot(old, new, now)
        ahead = (now - new.start).total_seconds() + (self.defer_s or 0.0)
        return tuple(x if i * new.slot_s < ahead else 0.0 for i, x in enumerate(full))


def _worst_slots(items: list[Any], budget: Any, hist: Any) -> None:
    """Which slot first needs sessions sent, and what its over is made of."""
    slots = max((len(e) for e, _ in items), default=0)
    if not slots:
        return
    limit = [float(budget)] * slots if isinstance(budget, (int, float)) else \
        [float(budget[i]) if i < len(budget) else 0.0 for i in range(slots)]
    totals = [sum(e[i] for e, _ in items if i < len(e)) for i in range(slots)]
    over, worst = max((totals[i] - limit[i], i) for i in range(slots))
    if over > 1e-9:
        hist[worst] += 1


def _excess_kinds(pairs: list[Any], kinds: Any) -> None:
    """kW-slots by which kept schedules exceed the new plan, by kind (the new plan pauses the car, or
    gives it less) and by where (the slot in force, the next, later), at each new slot's middle."""
    for old, new in pairs:
        for t, amps in enumerate(new.current_a):
            was = old.value_at(new.start + (new.end - new.start) * ((t + 0.5) / len(new.current_a)))
            if was is not None and was > amps:
                where = ("slot 0", "slot 1")[t] if t < 2 else "later"
                kinds[f"{'pause' if amps == 0 else 'less'} {where}"] += (was - amps) * new.phases * 0.23


def _would_send(pusher: Any, h: Hysteresis, plans: Any, headroom_kw: Any, offsets: Any, now: datetime,
                worst: Any = None, kinds: Any = None) -> int:
    """How many of ``plans`` a pusher judging with ``h`` would send (one decision, counterfactual)."""
    sent = 0
    candidates: dict[str, list[Any]] = {}
    for sp, caps, group in plans:
        shaped = pusher_mod.on_station_clock(pusher_mod.shape_tx_profile(sp, caps, pusher.stack_level),
                                             (offsets or {}).get(sp.station_id, 0.0))
        key = (sp.station_id, sp.evse_id)
        old = pusher.expected(key, shaped.offset_s)
        if old is None or old.transaction_id != sp.transaction_id or \
                h.unchanged(old, shaped.carried, now, pusher.pushed_at.get(key)) is None:
            sent += 1
            continue
        candidates.setdefault(group, []).append((old, shaped.carried))
    for group, pairs in candidates.items():
        headroom = (headroom_kw or {}).get(group, 0.0)
        if hasattr(h, "budgeted") and type(h) is Hysteresis:
            excess, budget = h.budgeted(pairs, now, headroom)
        else:
            excess, budget = [h.excess_by_slot(old, new, now) for old, new in pairs], headroom
        items = list(zip(excess, range(len(pairs))))
        sent += len(items) - len(keep_within_budget(items, budget))
        if worst is not None:
            _worst_slots(items, budget, worst)
        if kinds is not None:
            _excess_kinds(pairs, kinds)
    return sent


def _why_budget(pusher: Any, h: Hysteresis, plans: Any, to_send: Any, now: datetime, stats: dict[str, Any]) -> None:
    """Per plan that sends for the budget: did the sessions sent for other reasons (or new ones) take
    more now than they had, which the kept ones must then give up?"""
    sent = {(s.carried.station_id, s.carried.evse_id): s for s in to_send}
    taken, budget_sends = 0.0, 0
    for sp, _caps, _group in plans:
        key = (sp.station_id, sp.evse_id)
        shaped = sent.get(key)
        if shaped is None:
            continue
        old = pusher.expected(key, shaped.offset_s)
        unchanged = old is not None and old.transaction_id == sp.transaction_id and \
            h.unchanged(old, shaped.carried, now, pusher.pushed_at.get(key)) is not None
        if unchanged:
            budget_sends += 1
            continue
        was = (old.value_at(now) if old is not None else 0.0) or 0.0
        taken += ((shaped.carried.value_at(now) or 0.0) - was) * sp.phases * 0.23
    if budget_sends:
        bucket = "others took more now" if taken > 0.5 else ("others gave back now" if taken < -0.5 else "others ~same now")
        stats["budget_plans"][bucket] += 1
        stats["budget_sends_by"][bucket] += budget_sends


def install(stats: dict[str, Any]) -> None:
    """Patch the pusher and dispatcher so each decision is counted by cause."""
    causes: collections.Counter[str] = stats["causes"]
    reasons: collections.Counter[str] = stats["plan_reasons"]
    original_due = pusher_mod.Pusher.due
    original_decide = WaveDispatcher.decide

    def due(self: Any, plans: Any, headroom_kw: Any = None, **kw: Any) -> Any:
        to_send, skipped = original_due(self, plans, headroom_kw, **kw)
        now = self.clock()
        h = kw.get("hysteresis") or self.hysteresis
        for shaped in to_send:
            sp = shaped.carried
            key = (sp.station_id, sp.evse_id)
            old = self.expected(key, shaped.offset_s)
            if kw.get("cut"):
                cause = "cut"
            elif old is None:
                cause = "plan: no profile (new session)"
            elif old.transaction_id != sp.transaction_id or old.phases != sp.phases:
                cause = "plan: other transaction/phases"
            elif h.unchanged(old, sp, now, self.pushed_at.get(key)) is None:
                cause = "plan: " + why_not_kept(h, old, sp, now, self.pushed_at.get(key))
            else:
                cause = "plan: budget (keep_within_budget)"
            if key in self.in_flight:
                cause += " [behind in-flight]"
            causes[cause] += 1
        stats["kept"] += len(skipped)
        if not kw.get("cut"):
            _why_budget(self, h, plans, to_send, now, stats)
        if not kw.get("cut") and not kw.get("newcomers"):
            for name, h in stats["variants"].items():
                stats["variant_sends"][name] += _would_send(self, h, plans, headroom_kw, kw.get("offsets"), now,
                                                           *((stats["worst_slot"], stats["excess_kinds"])
                                                             if name == "configured" else ()))
        return to_send, skipped

    def decide(self: Any, units: Any, now: Any, kind: str, reasons_: Any = None, **kw: Any) -> Any:
        if kind == "plan":
            stats["plans"] += 1
            for unit in units:
                stats["methods"][unit.plan.method] += 1
            stats["plan_times"].append(now)
            if kw.get("newcomers"):
                stats["newcomer_plans"] += 1
            for r in reasons_ or []:
                reasons[r] += 1
        if not stats["variants"]:
            h = self.hysteresis
            stats["variants"].update({"configured": h, "near480": replace(h, near_s=480.0),
                                      "near960": replace(h, near_s=960.0, defer_s=960.0),
                                      "middle(unsafe)": _Middle(h.current_a, h.refresh_s, h.min_interval_s, h.near_s,
                                                                h.defer_s),
                                      "budget_near_only(unsafe)": _Near(h.current_a, h.refresh_s, h.min_interval_s,
                                                                        h.near_s, h.defer_s)})
        return original_decide(self, units, now, kind, reasons_, **kw)

    pusher_mod.Pusher.due = due  # type: ignore[method-assign]
    WaveDispatcher.decide = decide  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--stations", type=int, default=48)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json")
    args = ap.parse_args()
    stats: dict[str, Any] = {"causes": collections.Counter(), "plan_reasons": collections.Counter(), "kept": 0,
                             "plans": 0, "newcomer_plans": 0, "plan_times": [],
                             "variants": {}, "variant_sends": collections.Counter(),
                             "worst_slot": collections.Counter(),
                             "budget_plans": collections.Counter(), "budget_sends_by": collections.Counter(),
                             "methods": collections.Counter(), "excess_kinds": collections.Counter()}
    install(stats)
    from demo.evening import run_demo

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run_demo(Console(file=io.StringIO(), width=120), stations_n=args.stations,
                                      seconds=args.seconds, out=Path(tmp) / "probe.png", seed=args.seed))
    figures = result["figures"]
    times = stats.pop("plan_times")
    gaps = sorted((b - a).total_seconds() for a, b in zip(times, times[1:]))
    out = {"profiles": figures["profiles"], "over_kwh": figures["grid"]["over_kwh"], "drivers": figures["drivers"],
           "wall_s": round(time.monotonic() - started, 1),
           "plans": stats["plans"], "newcomer_plans": stats["newcomer_plans"], "kept": stats["kept"],
           "plan_gap_sim_s": {"median": gaps[len(gaps) // 2] if gaps else None,
                              "p10": gaps[len(gaps) // 10] if gaps else None,
                              "p90": gaps[9 * len(gaps) // 10] if gaps else None},
           "causes": dict(stats["causes"].most_common()),
           "counterfactual_sends": dict(stats["variant_sends"]),
           "budget_plans": dict(stats["budget_plans"]), "budget_sends_by": dict(stats["budget_sends_by"]),
           "plan_reasons": dict(stats["plan_reasons"].most_common()), "methods": dict(stats["methods"]),
           "kept_excess_kw_slots": {k: round(v) for k, v in stats["excess_kinds"].most_common()}}
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

"""One neighbourhood: transformer, households and their base load, the charge points' sessions.

`Neighbourhood` holds every assumption of a study run (docs/study.md states each with its
source); `base_kw` and `fleet` turn it into the arrays the engine runs on. The simulated period
is a warm-up day (a Sunday, not counted) followed by `weeks` Monday-to-Sunday weeks and one extra
day for the last cars to leave.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache, partial

import numpy as np

from bench.study.engine import Control, Run, StopRule, simulate
from bench.study.fleet import Fleet, FleetSpec, make_fleet
from bench.study.inputs import DAY_SLOTS, HOUSEHOLD_KWH_PER_YEAR, e1a_week_kw
from profiles.planner import plan

VARIANTS = ("uncontrolled", "smart (no pause)", "smart + pause")
WARMUP_DAYS = 1


@dataclass(frozen=True)
class Neighbourhood:
    transformer_kw: float = 400.0  # 400 kVA at unity power factor
    households: int = 175  # "about 150-200 households" behind one 400 kVA transformer
    kwh_per_household: float = HOUSEHOLD_KWH_PER_YEAR
    base_scale: float = 1.0  # multiplies the E1A base load (the sensitivity's "base load" row)
    fleet: FleetSpec = field(default_factory=FleetSpec)
    weeks: int = 8
    horizon_slots: int = 32
    # "heuristic" or "auto" (the LP refinement when it fits the size and the 1 s budget), passed to
    # profiles.planner.plan. The heuristic is what `plan` sends when the LP does not fit; it is about
    # three times cheaper, so the capacity searches use it and parts.lp_check measures the difference.
    planner_method: str = "heuristic"

    def with_(self, **changes: object) -> Neighbourhood:
        return replace(self, **changes)  # type: ignore[arg-type]

    def with_fleet(self, **changes: object) -> Neighbourhood:
        return replace(self, fleet=self.fleet.with_(**changes))

    @property
    def days(self) -> int:
        return 7 * self.weeks

    @property
    def n_slots(self) -> int:
        return (self.days + WARMUP_DAYS + 1) * DAY_SLOTS

    def base_kw(self) -> np.ndarray:
        week = e1a_week_kw(self.households, self.kwh_per_household) * self.base_scale
        # The warm-up day is a Sunday (the week's last day), then Monday to Sunday weeks.
        seq = np.concatenate([week[6 * DAY_SLOTS:], np.tile(week, self.weeks + 1)])
        return seq[:self.n_slots]

    def limit_kw(self, windows: tuple[tuple[float, float, float], ...] = ()) -> np.ndarray:
        """The transformer limit, lowered to `kw` from hour `lo` to `hi` on every counted day for
        each window (not on the final day, which only lets the last cars leave)."""
        limit = np.full(self.n_slots, float(self.transformer_kw))
        idx = np.arange(self.n_slots)
        hours = (idx % DAY_SLOTS) / 4.0
        counted = (idx >= WARMUP_DAYS * DAY_SLOTS) & (idx < self.n_slots - DAY_SLOTS)
        for lo, hi, kw in windows:
            sel = (hours >= lo) & (hours < hi) & counted
            limit[sel] = np.minimum(limit[sel], kw)
        return limit

    def fleet_for(self, charge_points: int) -> Fleet:
        return _fleet(self.fleet, charge_points, self.days)


@lru_cache(maxsize=8)
def _fleet(spec: FleetSpec, charge_points: int, days: int) -> Fleet:
    return make_fleet(spec, charge_points, days, WARMUP_DAYS)


def control_for(variant: str, hood: Neighbourhood) -> Control:
    if variant == "uncontrolled":
        return Control(None)
    policy = partial(plan, method=hood.planner_method)
    if variant == "smart (no pause)":
        return Control(policy, allow_pause=False, horizon_slots=hood.horizon_slots)
    if variant.startswith("smart + pause"):
        return Control(policy, allow_pause=True, horizon_slots=hood.horizon_slots)
    raise ValueError(f"unknown variant {variant!r}")


def run_variant(hood: Neighbourhood, variant: str, charge_points: int, *, stop: StopRule | None = None,
                windows: tuple[tuple[float, float, float], ...] = ()) -> Run:
    """Simulate `charge_points` under `variant` (V2G variants make every car bidirectional)."""
    if variant.endswith("V2G"):
        hood = hood.with_fleet(v2g=True)
    return simulate(hood.fleet_for(charge_points), hood.base_kw(), hood.limit_kw(windows),
                    control_for(variant, hood), stop)

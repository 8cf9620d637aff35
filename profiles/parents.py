"""Nested capacity groups: fit each subtree under its ancestor's limit.

Each group is planned on its own (its sessions, its own limit); a site under a transformer may
then, with its siblings, still overload the transformer. For every ancestor whose subtree would
draw more than its limit in a slot, the EV load of every group in the subtree is capped in
proportion to its share of the subtree's planned EV load, and the group is planned again under
that cap (once: a plan keeps to its cap). Ancestors are visited in the given order; a group
refitted under an earlier ancestor starts again from its own limit when a later one refits it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import NamedTuple

from profiles.planner import Plan, PlanInput

OVERLOAD_EPS_KW = 1e-6


class PlannedGroup(NamedTuple):
    inp: PlanInput
    plan: Plan


def fit_parents(groups: Mapping[str, PlannedGroup], order: Sequence[str], descendants: Mapping[str, Sequence[str]],
                solve: Callable[[PlanInput], Plan]) -> dict[str, PlannedGroup]:
    """The groups after fitting every overloaded subtree; ``groups`` as first planned (uncapped),
    ``order`` the ancestors to check, ``descendants`` every group nested below each one."""
    first = {tid: group.inp for tid, group in groups.items()}
    out = dict(groups)
    for ancestor in order:
        below = [t for t in descendants.get(ancestor, ()) if t in out]
        if not below or ancestor not in out:
            continue
        subtree = [ancestor, *below]
        limit = out[ancestor].inp.limit_kw
        n = len(limit)
        load = [sum(out[t].plan.total_kw[i] + out[t].inp.base_load_kw[i] for t in subtree) for i in range(n)]
        over = [max(0.0, load[i] - limit[i]) for i in range(n)]
        if max(over) <= OVERLOAD_EPS_KW:
            continue
        for t in subtree:
            group = out[t]
            ev_total = [sum(out[x].plan.total_kw[i] for x in subtree) or 1.0 for i in range(n)]
            cap = [group.inp.base_load_kw[i]
                   + max(0.0, group.plan.total_kw[i] - over[i] * group.plan.total_kw[i] / ev_total[i])
                   for i in range(n)]
            inp = replace(first[t], limit_kw=[min(a, b) for a, b in zip(first[t].limit_kw, cap)])
            out[t] = PlannedGroup(inp, solve(inp))
    return out

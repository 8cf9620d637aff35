"""Which capacity group each EVSE sits behind, on which phases, and how the groups nest.

Assignment is decided once per (station, EVSE) and cached: the most specific rule wins (exact
station id before a pattern, a named EVSE before "all EVSEs", then the more deeply nested group,
since a site under a transformer is the narrower answer and its load still counts on the
transformer through the chain); remaining ties go to the first rule in config order. So a broad
pattern on a transformer never swallows the stations of a site configured below it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from csms.grid.config import PHASES, GridConfig, MemberRule


class Located(Protocol):
    """Anything on one EVSE of one station (a charging session)."""

    @property
    def station_id(self) -> str: ...

    @property
    def evse_id(self) -> int: ...


L = TypeVar("L", bound=Located)


@dataclass(frozen=True)
class Assignment:
    transformer_id: str
    rule: MemberRule


def _specificity(rule: MemberRule, depth: int) -> tuple[int, int, int]:
    return (0 if rule.is_pattern else 1, 1 if rule.evse is not None else 0, depth)


class Topology:
    def __init__(self, grid: GridConfig) -> None:
        self._groups = grid.transformers
        self._rules: list[tuple[tuple[int, int, int], int, str, MemberRule]] = []
        order = 0
        for tid, group in grid.transformers.items():
            depth = len(self.chain(tid))
            for rule in group.members:
                self._rules.append((_specificity(rule, depth), order, tid, rule))
                order += 1
        # Most specific first, then config order.
        self._rules.sort(key=lambda r: (tuple(-x for x in r[0]), r[1]))
        self._cache: dict[tuple[str, int], Assignment | None] = {}

    def assignment(self, station_id: str, evse_id: int) -> Assignment | None:
        key = (station_id, evse_id)
        if key not in self._cache:
            if len(self._cache) > 100_000:  # bounded: station ids come from the outside world
                self._cache.clear()
            self._cache[key] = next((Assignment(tid, rule) for _, _, tid, rule in self._rules
                                     if rule.matches(station_id, evse_id)), None)
        return self._cache[key]

    def transformer_of(self, station_id: str, evse_id: int) -> str | None:
        """The innermost group the EVSE is assigned to, or None when no rule matches."""
        found = self.assignment(station_id, evse_id)
        return found.transformer_id if found else None

    def wiring(self, station_id: str, evse_id: int) -> tuple[str, ...]:
        """Transformer phases the EVSE's L1, L2, L3 land on (all three when not configured)."""
        found = self.assignment(station_id, evse_id)
        return found.rule.phases if found else PHASES

    def chain(self, transformer_id: str) -> list[str]:
        """The group itself followed by its ancestors, innermost first ([] for an unknown id)."""
        out: list[str] = []
        node: str | None = transformer_id
        while node is not None and node in self._groups and node not in out:
            out.append(node)
            node = self._groups[node].parent
        return out

    def members(self, transformer_id: str) -> list[MemberRule]:
        """The member rules configured directly on this group."""
        group = self._groups.get(transformer_id)
        return list(group.members) if group else []

    def children(self, transformer_id: str) -> list[str]:
        return [tid for tid, g in self._groups.items() if g.parent == transformer_id]

    def descendants(self, transformer_id: str) -> list[str]:
        """All groups nested below this one (depth first, config order)."""
        out: list[str] = []
        for child in self.children(transformer_id):
            out.append(child)
            out.extend(self.descendants(child))
        return out

    def is_under(self, station_id: str, evse_id: int, transformer_id: str) -> bool:
        """Whether the EVSE's load counts against this group (directly or through a nested group)."""
        leaf = self.transformer_of(station_id, evse_id)
        return leaf is not None and transformer_id in self.chain(leaf)

    def roots(self) -> list[str]:
        return [tid for tid, g in self._groups.items() if g.parent is None]

    def group_members(self, items: Mapping[tuple[str, int], L], group_ids: Iterable[str],
                      ordered: bool = False) -> dict[str, list[L]]:
        """``items`` (keyed by station and EVSE) per innermost group, in insertion order, or with
        ``ordered`` in key order (so ties in the planner break the same way whatever order the
        stations' messages came in); every id in ``group_ids`` is present."""
        out: dict[str, list[L]] = {tid: [] for tid in group_ids}
        for key in sorted(items) if ordered else list(items):
            item = items[key]
            tid = self.transformer_of(item.station_id, item.evse_id)
            if tid is not None:
                out.setdefault(tid, []).append(item)
        return out

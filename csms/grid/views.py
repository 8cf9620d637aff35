"""What the operator sees of the grid: per capacity group the limit in force, measured and planned
load and every session with its setpoint (``/api/grid``, the dashboard, the MQTT status)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from csms.grid.config import GridConfig
from csms.grid.history import Sample
from csms.grid.metrics import ControlMetrics
from csms.grid.model.limits import LimitBook
from csms.grid.model.sessions import Session, SessionBook, exported_kwh, remaining_kwh
from csms.grid.model.topology import Topology
from csms.grid.planning import GroupPlan
from csms.interfaces import Clock
from profiles.margin import margin_kw


@dataclass
class GroupState:
    """The last plan of one capacity group, for the snapshot and the metrics."""

    limit_kw: float = 0.0
    limit_source: str = "capacity"
    base_load_kw: float = 0.0
    planned_kw: float = 0.0  # EV load planned for the current slot
    margin_kw: float = 0.0  # the safety margin the plan kept below the limit
    planned_at: datetime | None = None
    infeasible: bool = False
    sessions: list[str] = field(default_factory=list)


class GroupViews:
    def __init__(self, grid: GridConfig, limits: LimitBook, book: SessionBook, topology: Topology,
                 metrics: ControlMetrics, clock: Clock) -> None:
        self.grid = grid
        self.limits = limits
        self.book = book
        self.topology = topology
        self.metrics = metrics
        self.clock = clock
        self.groups: dict[str, GroupState] = {tid: GroupState() for tid in grid.transformers}
        self.subtrees = {tid: [tid, *topology.descendants(tid)] for tid in grid.transformers}

    def remember(self, unit: GroupPlan, now: datetime) -> None:
        """Keep what ``unit`` planned for its group (and export it as metrics)."""
        state = self.groups.setdefault(unit.tid, GroupState())
        state.limit_kw = unit.limit_kw
        state.margin_kw = unit.margin_kw
        state.limit_source = unit.sources[0] if unit.sources else "capacity"
        state.base_load_kw = float(unit.inp.base_load_kw[0])
        state.planned_kw = float(unit.plan.total_kw[0])
        state.planned_at = now
        state.infeasible = 0 in unit.plan.infeasible_slots
        state.sessions = [s.session_id for s in unit.inp.sessions]
        for session in unit.sessions:
            sid = session.session_id
            sp = unit.plan.sessions.get(sid)
            if sp is None or sid in unit.held:  # a held session's plan is the one it holds
                continue
            session.plan_reason = sp.reason
            session.plan_guarantee_short_kwh = sp.guarantee_unmet_kwh
            session.planned_off_from = None if sp.off_from_slot is None else \
                now + timedelta(seconds=sp.off_from_slot * unit.inp.slot_s)
        self.metrics.limit.labels(unit.tid).set(state.limit_kw)
        self.metrics.planned.labels(unit.tid).set(state.planned_kw + state.base_load_kw)
        self.metrics.load.labels(unit.tid).set(self.measured_kw(unit.tid) + state.base_load_kw)

    def _sessions(self, tid: str) -> list[Session]:
        return self.topology.group_members(self.book.sessions, self.grid.transformers).get(tid, [])

    def measured_kw(self, tid: str) -> float:
        return sum(s.power_kw or 0.0 for s in self._sessions(tid))

    def samples(self, now: datetime) -> dict[str, Sample]:
        """Every group's load, limit and plan now, for the history (one pass over the sessions). A
        group's figures cover the groups nested below it too: its limit holds for all of them."""
        members = self.topology.group_members(self.book.sessions, self.grid.transformers)
        own: dict[str, tuple[float, float, float]] = {}  # EV, base, planned EV of the group itself
        for tid in self.grid.transformers:
            state = self.groups.get(tid, GroupState())
            if state.planned_at is None and self.grid.planning.enabled:
                continue  # its base load and plan are not known before its first plan (a second after start)
            own[tid] = (sum(s.power_kw or 0.0 for s in members.get(tid, [])), state.base_load_kw, state.planned_kw)
        out = {}
        for tid in own:
            subtree = [t for t in self.subtrees[tid] if t in own]
            ev, base, planned = (sum(own[t][i] for t in subtree) for i in range(3))
            limit, _ = self.limits.limit_at(tid, now)
            out[tid] = Sample(load_kw=ev + base, ev_kw=ev, non_ev_kw=base, limit_kw=limit, planned_kw=planned + base)
        return out

    def group_snapshot(self, tid: str) -> dict[str, Any]:
        state = self.groups.get(tid, GroupState())
        now = self.clock()
        limit, source = self.limits.limit_at(tid, now)
        sessions = self._sessions(tid)
        measured = sum(s.power_kw or 0.0 for s in sessions)
        p = self.grid.planning
        return {
            "transformer": tid,
            "limit_kw": limit,
            "limit_source": source,
            "margin_kw": round(margin_kw(limit, p.margin_kw, p.margin_percent), 3),
            "margin": {"kw": p.margin_kw, "percent": p.margin_percent},
            "safe_mode": self.limits.in_safe_mode(tid),
            "measured_kw": round(measured + state.base_load_kw, 3),
            "measured_ev_kw": round(measured, 3),
            "planned_kw": round(state.planned_kw + state.base_load_kw, 3),
            "planned_ev_kw": round(state.planned_kw, 3),
            "base_load_kw": state.base_load_kw,
            "planned_at": state.planned_at.isoformat() if state.planned_at else None,
            "infeasible": state.infeasible,
            "with_nested": self._with_nested(tid, measured),
            "sessions": [self.session_view(s) for s in sessions],
        }

    def _with_nested(self, tid: str, measured_ev: float) -> dict[str, float]:
        """The group with the groups nested below it (what its limit holds for; the history's figures)."""
        ev, base, planned = measured_ev, 0.0, 0.0
        for t in self.subtrees.get(tid, [tid]):
            state = self.groups.get(t, GroupState())
            base += state.base_load_kw
            planned += state.planned_kw
            if t != tid:
                ev += sum(s.power_kw or 0.0 for s in self._sessions(t))
        return {"load_kw": round(ev + base, 3), "ev_kw": round(ev, 3), "non_ev_kw": round(base, 3),
                "planned_kw": round(planned + base, 3)}

    def session_view(self, s: Session) -> dict[str, Any]:
        st = self.book.station(s.station_id)
        need = s.need
        return {
            "station_id": s.station_id, "evse_id": s.evse_id, "transaction_id": s.transaction_id,
            "state": s.state(), "charging_state": s.charging_state, "connected": st.connected,
            "setpoint_a": s.setpoint_a, "setpoint_kw": None if s.setpoint_kw is None else round(s.setpoint_kw, 3),
            "actual_kw": None if s.power_kw is None else round(s.power_kw, 3),
            "delivered_kwh": round(s.delivered_kwh, 3),  # net: import minus export
            "imported_kwh": round(s.imported_kwh, 3), "exported_kwh": round(s.exported_kwh, 3),
            "remaining_kwh": round(remaining_kwh(s, need), 3) if need is not None else None,
            "need_kwh": None if need is None else need.energy_kwh,
            "guaranteed_kwh": None if need is None else need.guaranteed_kwh,
            "discharge_left_kwh": round(max(0.0, need.dischargeable_kwh - exported_kwh(s, need)), 3)
            if need is not None and need.v2g else None,
            "need_source": "default" if need is None else need.source,
            "departure": None if need is None else need.departure.isoformat(),
            "fixed_kw": s.fixed_kw, "fixed_reason": s.fixed_reason,
            "can_pause": s.can_pause, "no_pause_reason": s.no_pause_reason,
            # Does the car resume after a pause? "no", "suspected" or "known" (this session or earlier
            # ones of the car or its station model), and what the plan made of it.
            "no_resume": s.no_resume, "no_resume_reason": s.no_resume_reason,
            "identified_by": sorted({k.split(":", 1)[0] for k in s.vehicle_ids}),  # kinds only: this goes to MQTT
            "planned_off_from": None if s.planned_off_from is None else s.planned_off_from.isoformat(),
            "plan_reason": s.plan_reason,
            "guarantee_short_kwh": round(s.plan_guarantee_short_kwh, 3),
            "push_status": s.push_status,
            "clock_offset_s": st.clock_offset_s,
        }

    def snapshot(self, *, plans: int, pushes_sent: int, pushes_skipped: int, last_reaction_s: float | None,
                 pushes_identical: int = 0) -> dict[str, Any]:
        """Everything the operator API and dashboard show, per capacity group."""
        return {
            "at": self.clock().isoformat(),
            "plans": plans,
            "pushes_sent": pushes_sent,
            "pushes_skipped": pushes_skipped,
            "pushes_identical": pushes_identical,
            "last_reaction_s": last_reaction_s,
            "transformers": {tid: self.group_snapshot(tid) for tid in self.grid.transformers},
        }

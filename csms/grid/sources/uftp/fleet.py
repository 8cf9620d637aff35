"""The fleet as the UFTP offer sees it: each session behind a capacity group with its needs (the
planner's own view, csms.grid.model.sessions.session_need) and what it draws now."""

from __future__ import annotations

from datetime import datetime, timedelta

from csms.grid.config import GridConfig
from csms.grid.model.limits import LimitBook
from csms.grid.model.sessions import SessionBook, session_need
from csms.grid.model.topology import Topology
from profiles.flex_offer import DrawingSession
from profiles.margin import margin_kw

HEADROOM_SLOT_S = 300.0
HEADROOM_MAX_S = 24 * 3600.0


class GridFleet:
    """:class:`csms.grid.sources.uftp.aggregator.Fleet` over the grid's session book and topology."""

    def __init__(self, grid: GridConfig, sessions: SessionBook, topology: Topology, limits: LimitBook) -> None:
        self.grid = grid
        self.sessions = sessions
        self.topology = topology
        self.limits = limits

    def drawing_sessions(self, transformer_id: str, now: datetime) -> list[DrawingSession]:
        out = []
        for s in self.sessions:
            if not self.topology.is_under(s.station_id, s.evse_id, transformer_id):
                continue
            st = self.sessions.station(s.station_id)
            need = session_need(s, st.caps, now, self.sessions.defaults, self.topology.wiring(s.station_id, s.evse_id),
                                connected=st.connected)
            draw = s.power_kw if s.power_kw is not None else s.setpoint_kw
            out.append(DrawingSession(need, draw, self.grid.planning.voltage_v))
        return out

    def base_load_kw(self, transformer_id: str, at: datetime) -> float:
        return self.limits.base_load_kw(transformer_id, at)

    def is_under(self, station_id: str, evse_id: int, transformer_id: str) -> bool:
        return self.topology.is_under(station_id, evse_id, transformer_id)

    def clock_offset_s(self, station_id: str) -> float:
        station = self.sessions.stations.get(station_id)  # never create one: it may be long gone
        return (station.clock_offset_s or 0.0) if station is not None else 0.0

    def headroom(self, transformer_id: str, now: datetime, until_s: float) -> list[tuple[float, float, float]]:
        """(start s, end s, kW) from now: what the group's own limits (margin kept) leave for EV
        charging after its non-EV load, in 5-minute slots up to ``until_s`` (at most a day). Limits of
        parent groups are not counted."""
        slots = max(1, min(int(HEADROOM_MAX_S // HEADROOM_SLOT_S), int(-(-until_s // HEADROOM_SLOT_S))))
        p = self.grid.planning
        out = []
        for k, (kw, _) in enumerate(self.limits.schedule(transformer_id, now, slots, HEADROOM_SLOT_S)):
            start = k * HEADROOM_SLOT_S
            at = now + timedelta(seconds=start)
            room = kw - margin_kw(kw, p.margin_kw, p.margin_percent) - self.limits.base_load_kw(transformer_id, at)
            out.append((start, start + HEADROOM_SLOT_S, room))
        return out

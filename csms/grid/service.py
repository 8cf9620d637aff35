"""The grid part of the daemon, assembled: the limit intake with its signal sources, and the
controller. It is the :class:`csms.interfaces.GridService` the operator API reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from csms.grid.config import GridConfig
from csms.grid.control import GridController, GridDeps
from csms.grid.sources.mqtt import SignalListener
from csms.interfaces import Clock, LimitIntake


class Grid:
    """Start/stop as one component; ``signals`` and ``controller`` are its parts."""

    def __init__(self, config: GridConfig, deps: GridDeps, clock: Clock) -> None:
        self.config = config
        self.signals = SignalListener(config, deps.bus, registry=deps.metrics.registry, now=clock)
        self.controller = GridController(deps, config, self.signals.book, status=self.signals.status, clock=clock)

    async def start(self) -> None:
        await self.signals.start()
        await self.controller.start()

    async def stop(self) -> None:
        try:
            await self.controller.stop()
        finally:
            await self.signals.stop()

    # csms.interfaces.GridService ----------------------------------------------------------------
    @property
    def limits(self) -> LimitIntake:
        return self.signals

    def snapshot(self) -> dict[str, Any]:
        return self.controller.snapshot()

    def recent_events(self, limit: int) -> list[dict[str, Any]]:
        return list(self.controller.events)[-limit:]

    def set_session_need(self, station_id: str, evse_id: int, energy_kwh: float | None = None,
                         departure: datetime | None = None, guaranteed_kwh: float | None = None) -> dict[str, Any]:
        return self.controller.set_session_need(station_id, evse_id, energy_kwh, departure, guaranteed_kwh)

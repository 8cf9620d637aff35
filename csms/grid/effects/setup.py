"""Getting a station ready for control: read what it accepts in SetChargingProfile (or take it from
a configured model rule) and install the conservative fail-safe TxDefaultProfile."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from csms.grid.config import GridConfig
from csms.grid.effects.pusher import failsafe_profile
from csms.grid.journal import Journal
from csms.grid.model.sessions import SessionBook, StationCaps
from csms.interfaces import GridCommands, Spawner

log = logging.getLogger("csms.grid")

SMART_CHARGING_VARIABLES = ("RateUnit", "ProfileStackLevel", "PeriodsPerSchedule")


class StationSetup:
    def __init__(self, grid: GridConfig, book: SessionBook, commands: GridCommands, spawner: Spawner,
                 journal: Journal, ready: Callable[[str], None]) -> None:
        self.grid = grid
        self.book = book
        self.commands = commands
        self.spawner = spawner
        self.journal = journal
        self.ready = ready  # called with a reason once a station is set up (it can be planned for now)

    def ensure(self, station_id: str, force: bool = False) -> None:
        """Set the station up in the background unless it is ready (or being set up)."""
        st = self.book.station(station_id)
        if st.setup_running or (st.ready and not force):
            return
        st.setup_running = True
        self.spawner.spawn(self._setup(station_id), name=f"grid setup {station_id}")

    async def _setup(self, station_id: str) -> None:
        st = self.book.station(station_id)
        try:
            vendor_model = f"{st.vendor}/{st.model}" if st.vendor or st.model else None
            rule = self.grid.station_model_for(station_id, vendor_model)
            caps = StationCaps(rate_units=("A",), max_stack_level=0, periods_per_schedule=1, v2g=rule.v2g,
                               phases=rule.phases, max_current_a=rule.max_current_a,
                               min_current_a=rule.min_current_a, source="rule")
            try:
                response = await self.commands.get_variables(station_id, [
                    {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": name}}
                    for name in SMART_CHARGING_VARIABLES])
                apply_variables(caps, response.get("getVariableResult", []))
            except Exception as exc:  # noqa: BLE001 - a station without a device model gets the safest shape
                log.info("%s: GetVariables failed (%s); assuming amps, stack level 0, one period", station_id, exc)
            if rule.rate_unit is not None:
                caps.rate_units = (rule.rate_unit,)
            st.caps = caps
            profile = failsafe_profile(caps, self.grid.planning.fail_safe_limit_a)
            try:
                response = await self.commands.set_charging_profile(station_id, 0, profile)
                st.failsafe_status = str(response.get("status"))
            except Exception as exc:  # noqa: BLE001
                st.failsafe_status = type(exc).__name__
            st.ready = True
            self.journal.record("station_setup", station_id=station_id, rate_units=list(caps.rate_units),
                                stack_level=caps.max_stack_level, periods=caps.periods_per_schedule, v2g=caps.v2g,
                                caps_source=caps.source, failsafe=st.failsafe_status)
        finally:
            st.setup_running = False
        self.ready("station ready")


def apply_variables(caps: StationCaps, results: list[dict[str, Any]]) -> None:
    """Fold GetVariables answers into ``caps`` (unparseable values keep the safe defaults)."""
    found = False
    for r in results:
        if r.get("attributeStatus") != "Accepted" or not isinstance(r.get("attributeValue"), str):
            continue
        name, value = r["variable"]["name"], r["attributeValue"]
        if name == "RateUnit":
            units = tuple(u.strip() for u in value.split(",") if u.strip() in ("A", "W"))
            if units:
                caps.rate_units, found = units, True
        elif name in ("ProfileStackLevel", "PeriodsPerSchedule"):
            try:
                number = int(value)
            except ValueError:
                continue
            if number >= (0 if name == "ProfileStackLevel" else 1):
                found = True
                if name == "ProfileStackLevel":
                    caps.max_stack_level = number
                else:
                    caps.periods_per_schedule = number
    if found:
        caps.source = "device-model"

"""What a version layer does for the station core: the seam between physics and the wire.

A `Dialect` turns the core's events (boot accepted, a connector changed, a transaction started,
a sample is due) into that OCPP version's messages, pushed on the core's outbox, and answers the
central system's requests of that version (`handlers`: action -> camelCase payload in, camelCase
answer out) through the core's neutral operations. It holds no physics of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from simulators.charging_profiles import ProfileRules
from simulators.meter import sample

if TYPE_CHECKING:
    from simulators.station_core import Evse, StationCore

Handler = Callable[[dict], dict]


class Dialect:
    """The common part; `simulators.versions.v16`, `v201` and `v21` fill in the rest."""

    version = ""

    def __init__(self, core: StationCore) -> None:
        self.core = core
        self.model = core.model
        self.handlers: dict[str, Handler] = self._handlers()

    @property
    def subprotocol(self) -> str:
        return f"ocpp{self.version}"

    def _handlers(self) -> dict[str, Handler]:
        raise NotImplementedError

    def profile_rules(self) -> ProfileRules:
        return ProfileRules(negative_limits=self.model.discharges)

    # --- events from the core (override what the version sends) ------------------------------

    def boot_payload(self, reason: str) -> dict:
        raise NotImplementedError

    def after_boot(self, now: datetime, reason: str | None) -> None:
        """Boot accepted: report every connector."""
        for evse in self.core.evses.values():
            self.connector_status(evse, now)

    def connector_status(self, evse: Evse, now: datetime) -> None:
        raise NotImplementedError

    def ev_connected(self, evse: Evse, now: datetime) -> None:
        """A car is plugged in (after the transaction started): e.g. ISO 15118 charging needs."""

    def authorize(self, token: dict, done: Callable[[str | None], None]) -> None:
        """Ask the central system about `token`; `done(status)` with None when the call failed."""
        raise NotImplementedError

    def transaction_event(self, evse: Evse, event_type: str, trigger: str, now: datetime, *,
                          context: str | None = None, id_token: dict | None = None,
                          stopped_reason: str | None = None) -> None:
        """`event_type` Started / Updated / Ended with the OCPP 2.0.1 trigger and reason names."""
        raise NotImplementedError

    def operation_mode_changed(self, evse: Evse, now: datetime) -> None:
        """The OCPP 2.1 operation mode in force on `evse` changed."""

    def may_discharge(self, evse: Evse) -> bool:
        """May the station hand the car a discharge offer on `evse` (the car decides whether it can)?"""
        return self.model.discharges and (evse.tx is None or evse.tx.discharge_allowed)

    def transaction_id(self, evse_id: int) -> Any:
        """The id the central system knows the running transaction on `evse_id` by (None: none)."""
        return self.core.transaction_id(evse_id)

    # --- shared helpers -------------------------------------------------------------------------

    def sample(self, evse: Evse, now: datetime, context: str) -> dict:
        """One MeterValue in the OCPP 2.0.1 shape (the 1.6 layer reshapes it)."""
        return sample(at=now, context=context, import_wh=evse.import_wh, export_wh=evse.export_wh,
                      current_a=evse.current_a, phases_used=evse.phases_used, station_phases=self.model.phases,
                      offered_a=evse.offered_a, soc=evse.ev.soc if evse.ev else None,
                      export_capable=self.model.v2g)

"""Interfaces between the grid's layers (the daemon-wide ones are in csms/interfaces.py)."""

from __future__ import annotations

from typing import Any, Protocol


class StatusSink(Protocol):
    """Where each group's state goes for systems that follow it (MQTT status; kept in memory without a broker)."""

    def publish(self, transformer_id: str, state: dict[str, Any]) -> None:
        """Merge ``state`` into the group's status; never blocks, never raises because of a broker."""
        ...

    def signal_verdict(self, transformer_id: str, verdict: dict[str, Any]) -> None:
        """The verdict on one limit signal (sent now, or dropped while the broker is away)."""
        ...


class Replanner(Protocol):
    """Asks the controller for a re-plan (coalesced), and tells it about limit changes."""

    def request(self, reason: str) -> None: ...

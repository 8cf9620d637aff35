"""Websocket subprotocols the daemon speaks.

Each OCPP version is one entry: its subprotocol name, the folder of the `ocpp` package's JSON
schemas, and the router with its station-initiated handlers. Adding ``ocpp2.1`` or ``ocpp1.6``
later means adding an entry here and a router; the transport does not change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProtocolVersion:
    subprotocol: str
    schema_dir: str  # folder name under the ocpp package, e.g. "v201"


OCPP201 = ProtocolVersion(subprotocol="ocpp2.0.1", schema_dir="v201")

VERSIONS: dict[str, ProtocolVersion] = {OCPP201.subprotocol: OCPP201}
SUPPORTED_SUBPROTOCOLS: tuple[str, ...] = tuple(VERSIONS)

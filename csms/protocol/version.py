"""What the transport needs to know about one OCPP version: its websocket subprotocol, where the
`ocpp` package keeps its JSON schemas, and which actions only a station sends.

The versions the daemon speaks, with their handlers and command builders, are listed in the
version table (csms/ocpp/versions.py); this descriptor is all the edge itself uses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProtocolVersion:
    subprotocol: str  # e.g. "ocpp2.0.1"
    schema_dir: str  # folder name under the ocpp package, e.g. "v201"
    # Actions only a charging station sends (the CSMS never calls them).
    station_only: frozenset[str] = frozenset()
    # Actions either side may initiate (DataTransfer).
    both_ways: frozenset[str] = frozenset()
    # CALLERROR codes this version spells differently from OCPP-J 2.0.1 (the daemon's own words), as
    # (2.0.1 code, this version's) pairs: a tuple keeps the descriptor hashable.
    error_codes: tuple[tuple[str, str], ...] = ()

    def error_code(self, code: str) -> str:
        """``code`` (an OCPP-J 2.0.1 error code) as this version's CALLERROR says it."""
        for ours, theirs in self.error_codes:
            if ours == code:
                return theirs
        return code

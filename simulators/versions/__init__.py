"""One module per OCPP version over the shared station core (`simulators.station_core`).

`dialect_for(core)` picks the layer the station model's `ocpp_version` names:
`v16.Dialect16` (OCPP 1.6J), `v201.Dialect201` (OCPP 2.0.1), `v21.Dialect21` (OCPP 2.1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulators.versions.base import Dialect

if TYPE_CHECKING:
    from simulators.station_core import StationCore

SUBPROTOCOLS = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1", "2.1": "ocpp2.1"}


def dialect_for(core: StationCore) -> Dialect:
    from simulators.versions.v16 import Dialect16
    from simulators.versions.v21 import Dialect21
    from simulators.versions.v201 import Dialect201

    layers: dict[str, type[Dialect]] = {"1.6": Dialect16, "2.0.1": Dialect201, "2.1": Dialect21}
    return layers[core.model.ocpp_version](core)


__all__ = ["SUBPROTOCOLS", "Dialect", "dialect_for"]

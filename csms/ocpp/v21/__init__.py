"""OCPP 2.1: the 2.0.1 behaviour carried over, plus the messages 2.1 adds.

Every 2.0.1 handler is reused as it is (the 2.1 payloads it reads are supersets of 2.0.1's and the
answers it builds are valid 2.1); validation against the 2.1 schemas happens at the edge like for
any version. The handlers in :mod:`csms.ocpp.v21.additions` answer what only 2.1 stations send
(V2X/DER notifications, settlements, priority charging, periodic event streams ...). The V2X
needs in ``NotifyEVChargingNeeds`` reach the grid controller through the same event as 2.0.1's
(:class:`csms.domain.events.EvChargingNeeds`, which carries ``chargingNeeds`` whole).
"""

from __future__ import annotations

from csms.ocpp import v201
from csms.ocpp.package import Handler, HandlerDeps, Router, VersionPackage
from csms.ocpp.v21 import additions
from csms.ocpp.v21.commands import V21Commands
from csms.protocol.version import ProtocolVersion

#: What only a 2.1 station sends, beyond 2.0.1's. NotifyPeriodicEventStream is not here: it is
#: a SEND frame (no answer), which OCPP-J 2.0 framing and the ``ocpp`` package do not carry.
STATION_ONLY_21 = frozenset({
    "BatterySwap", "ClosePeriodicEventStream", "GetCertificateChainStatus", "NotifyDERAlarm", "NotifyDERStartStop",
    "NotifyPriorityCharging", "NotifySettlement", "OpenPeriodicEventStream", "PullDynamicScheduleUpdate",
    "ReportDERControl", "VatNumberValidation",
})

OCPP21 = ProtocolVersion(subprotocol="ocpp2.1", schema_dir="v21", both_ways=v201.OCPP201.both_ways,
                         station_only=v201.OCPP201.station_only | STATION_ONLY_21)


def build_router(deps: HandlerDeps) -> Router:
    handlers: dict[str, Handler] = {}
    for block in v201.BLOCKS:
        handlers.update(block.routes(deps))
    handlers.update(additions.routes(deps))
    return Router(OCPP21, [handlers])


PACKAGE = VersionPackage(version=OCPP21, build_router=build_router, commands=V21Commands())

"""OCPP 1.6J (with the security extensions): the station-initiated handlers and the command set.

A 1.6 connector is an EVSE of the domain (connector N -> evse N, connector 1; connector 0 is the
whole charge point), and 1.6 transactions become the same :class:`csms.domain.transactions.TxEvent`
records 2.0.1 TransactionEvents do, so the store, the API and the grid controller see one model.
"""

from __future__ import annotations

from csms.ocpp.package import HandlerDeps, Router, VersionPackage
from csms.ocpp.v16 import core, notifications, transactions
from csms.ocpp.v16.commands import V16Commands
from csms.ocpp.v16.operations import adapter
from csms.protocol.version import ProtocolVersion

OCPP16 = ProtocolVersion(subprotocol="ocpp1.6", schema_dir="v16", both_ways=frozenset({"DataTransfer"}),
                         station_only=frozenset({
    "Authorize", "BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification", "Heartbeat",
    "LogStatusNotification", "MeterValues", "SecurityEventNotification", "SignCertificate",
    "SignedFirmwareStatusNotification", "StartTransaction", "StatusNotification", "StopTransaction",
}), error_codes=(
    # OCPP-J 1.6 section 4.2.3: its own spelling of two codes, and no RPC-framework or message-type codes.
    ("FormatViolation", "FormationViolation"), ("OccurrenceConstraintViolation", "OccurenceConstraintViolation"),
    ("RpcFrameworkError", "FormationViolation"), ("MessageTypeNotSupported", "NotSupported"),
))

BLOCKS = (core, transactions, notifications)


def build_router(deps: HandlerDeps) -> Router:
    return Router(OCPP16, [block.routes(deps) for block in BLOCKS])


PACKAGE = VersionPackage(version=OCPP16, build_router=build_router, commands=V16Commands(), adapt=adapter)

"""OCPP 2.0.1: the station-initiated handlers (one module per functional block) and the command set."""

from __future__ import annotations

from csms.ocpp.package import HandlerDeps, Router, VersionPackage
from csms.ocpp.v201 import (
    authorization,
    certificates,
    device_model,
    notifications,
    provisioning,
    smart_charging,
    transactions,
)
from csms.ocpp.v201.commands import V201Commands
from csms.protocol.version import ProtocolVersion

OCPP201 = ProtocolVersion(subprotocol="ocpp2.0.1", schema_dir="v201", both_ways=frozenset({"DataTransfer"}),
                          station_only=frozenset({
    "Authorize", "BootNotification", "ClearedChargingLimit", "FirmwareStatusNotification", "Get15118EVCertificate",
    "GetCertificateStatus", "Heartbeat", "LogStatusNotification", "MeterValues", "NotifyChargingLimit",
    "NotifyCustomerInformation", "NotifyDisplayMessages", "NotifyEVChargingNeeds", "NotifyEVChargingSchedule",
    "NotifyEvent", "NotifyMonitoringReport", "NotifyReport", "PublishFirmwareStatusNotification",
    "ReportChargingProfiles", "ReservationStatusUpdate", "SecurityEventNotification", "SignCertificate",
    "StatusNotification", "TransactionEvent",
}))

BLOCKS = (provisioning, authorization, transactions, device_model, certificates, notifications, smart_charging)


def build_router(deps: HandlerDeps) -> Router:
    return Router(OCPP201, [block.routes(deps) for block in BLOCKS])


PACKAGE = VersionPackage(version=OCPP201, build_router=build_router, commands=V201Commands())

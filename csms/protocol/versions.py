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
    # Actions only a charging station sends (the CSMS never calls them; DataTransfer goes both ways).
    station_only: frozenset[str] = frozenset()


OCPP201 = ProtocolVersion(subprotocol="ocpp2.0.1", schema_dir="v201", station_only=frozenset({
    "Authorize", "BootNotification", "ClearedChargingLimit", "FirmwareStatusNotification", "Get15118EVCertificate",
    "GetCertificateStatus", "Heartbeat", "LogStatusNotification", "MeterValues", "NotifyChargingLimit",
    "NotifyCustomerInformation", "NotifyDisplayMessages", "NotifyEVChargingNeeds", "NotifyEVChargingSchedule",
    "NotifyEvent", "NotifyMonitoringReport", "NotifyReport", "PublishFirmwareStatusNotification",
    "ReportChargingProfiles", "ReservationStatusUpdate", "SecurityEventNotification", "SignCertificate",
    "StatusNotification", "TransactionEvent",
}))

VERSIONS: dict[str, ProtocolVersion] = {OCPP201.subprotocol: OCPP201}
SUPPORTED_SUBPROTOCOLS: tuple[str, ...] = tuple(VERSIONS)

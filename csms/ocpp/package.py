"""What a version package provides: a router over its station-initiated actions, and the
builders of its CSMS-initiated requests. Handlers get narrow dependencies (:class:`HandlerDeps`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from csms.domain.registration import Authorizer, RegistrationConfig
from csms.interfaces import CertificateSigner, StationSession
from csms.protocol.version import ProtocolVersion
from csms.store.base import (
    DeviceModelStore,
    DocumentStore,
    MessageLog,
    SmartChargingStore,
    StationStore,
    TransactionStore,
)

Payload = dict[str, Any]
#: A station-initiated CALL: the validated request (camelCase, exactly as on the wire) in, the
#: response payload out; raising csms.protocol.errors.OcppError answers with that CALLERROR.
#: Everything a handler stores is durable before it returns (the answer is sent after that).
Handler = Callable[[StationSession, Payload], Awaitable[Payload]]


@dataclass(frozen=True)
class HandlerDeps:
    """Everything any handler of any version may use; each block takes only its part."""

    stations: StationStore
    transactions: TransactionStore
    smart_charging: SmartChargingStore
    device_model: DeviceModelStore
    messages: MessageLog
    registration: RegistrationConfig
    authorizer: Authorizer
    signer: CertificateSigner | None = None  # None: no certificate authority configured
    reports: StationReports | None = None  # where reports and status notifications of operations go
    iso15118: Iso15118Checks | None = None  # None: no contract-certificate checks, OCSP or provider
    billing: Billing | None = None  # None: no tariffs, no cost
    documents: DocumentStore | None = None  # durable counters (OCPP 1.6 transaction ids)


class StationReports(Protocol):
    """What becomes of a station's reports about operations we started (csms/operations.py)."""

    async def station_message(self, station_id: str, action: str, payload: Payload) -> None: ...

    async def reservation_changed(self, reservation_id: int, status: str, transaction_id: str | None = None) -> None:
        ...

    async def remote_start_granted(self, station_id: str, remote_start_id: int, id_token: str) -> bool:
        """Whether we asked this station to start ``remote_start_id`` for this token (F01/F02)."""
        ...

    async def remote_start_tag_granted(self, station_id: str, id_tag: str, connector_id: int) -> bool:
        """Whether we asked this station to start a transaction for ``id_tag`` on this connector
        (or on any) and it accepted (OCPP 1.6 RemoteStartTransaction, which has no id to match)."""
        ...

    async def certificate_issued(self, station_id: str, certificate_type: str, serial_number: str,
                                 not_after: datetime) -> None: ...

    async def certificate_delivered(self, station_id: str, serial_number: str, status: str) -> None: ...


class Iso15118Checks(Protocol):
    """ISO 15118 for the handlers: contract certificates in Authorize (C07), the station's OCSP
    questions (M06) and contract-certificate installation (M01/M02)."""

    async def contract_status(self, payload: Payload) -> str | None:
        """AuthorizeCertificateStatusEnumType of the certificate data in an Authorize, None without any."""
        ...

    async def certificate_status(self, ocsp_request_data: Payload) -> Payload:
        """A GetCertificateStatusResponse."""
        ...

    async def ev_certificate(self, station_id: str, payload: Payload) -> Payload:
        """A Get15118EVCertificateResponse."""
        ...


class Billing(Protocol):
    """Tariffs and costs (block I) for the handlers."""

    async def tariff_message(self, group_id: str | None) -> Payload | None:
        """The personalMessage (MessageContentType) with the token's tariff, None without one."""
        ...

    async def transaction_event(self, session: StationSession, payload: Payload, group_id: str | None) -> float | None:
        """Price a stored TransactionEvent: the final totalCost for an Ended one (None: no tariff); schedules
        CostUpdated with the running cost while charging."""
        ...


class Router:
    """One version's station-initiated actions and their handlers."""

    def __init__(self, version: ProtocolVersion, blocks: list[Mapping[str, Handler]]) -> None:
        self.version = version
        self._handlers: dict[str, Handler] = {}
        for block in blocks:
            for action, handler in block.items():
                if action in self._handlers:
                    raise ValueError(f"two handlers for {action}")
                self._handlers[action] = handler

    def handler(self, action: str) -> Handler | None:
        return self._handlers.get(action)

    @property
    def actions(self) -> frozenset[str]:
        return frozenset(self._handlers)


@dataclass(frozen=True)
class Request:
    """A CSMS-initiated call, built for one version."""

    action: str
    payload: Payload


class CommandSet(Protocol):
    """How one version spells each CSMS-initiated command, and reads the answers that change state."""

    def set_charging_profile(self, evse_id: int, profile: Payload) -> Request: ...

    def profile_verdict(self, response: Payload) -> tuple[str, Payload | None]:
        """(status, statusInfo) of a SetChargingProfile answer, for the profile's record."""
        ...

    def clear_charging_profile(self, profile_id: int | None, evse_id: int | None, purpose: str | None,
                               stack_level: int | None) -> Request: ...

    def get_charging_profiles(self, request_id: int, evse_id: int | None, purpose: str | None,
                              profile_ids: list[int] | None = None, stack_level: int | None = None,
                              limit_source: list[str] | None = None) -> Request: ...

    def get_composite_schedule(self, evse_id: int, duration_s: int, unit: str | None) -> Request: ...

    def request_start_transaction(self, remote_start_id: int, id_token: Payload, evse_id: int | None,
                                  charging_profile: Payload | None) -> Request: ...

    def request_stop_transaction(self, transaction_id: str) -> Request: ...

    def get_transaction_status(self, transaction_id: str | None) -> Request: ...

    def reset(self, type_: str, evse_id: int | None) -> Request: ...

    def change_availability(self, status: str, evse_id: int | None, connector_id: int | None) -> Request: ...

    def unlock_connector(self, evse_id: int, connector_id: int) -> Request: ...

    def trigger_message(self, requested_message: str, evse_id: int | None, connector_id: int | None) -> Request: ...

    def get_variables(self, items: list[Payload]) -> Request: ...

    def variable_results(self, items: list[Payload], response: Payload) -> list[Payload]:
        """The answer to one get_variables request as GetVariableResultType items (2.0.1 form)."""
        ...

    def variables_read(self, response: Payload) -> list[Payload]:
        """The variables a GetVariables answer reported, as device-model records."""
        ...

    def set_variables(self, items: list[Payload]) -> Request: ...

    def variable_statuses(self, items: list[Payload], response: Payload) -> list[Payload]:
        """The answer to one set_variables request as SetVariableResultType items (2.0.1 form)."""
        ...

    def variables_written(self, items: list[Payload], response: Payload) -> list[Payload]:
        """The variables a SetVariables answer accepted, as device-model records."""
        ...

    def get_base_report(self, request_id: int, report_base: str) -> Request: ...


#: How a version sends an operation built in the domain's (2.0.1) terms: (action, payload) in,
#: (its action, its payload, how to read its answer in the domain's terms) out.
Adapter = Callable[[str, Payload], tuple[str, Payload, Callable[[Payload], Payload]]]


@dataclass(frozen=True)
class VersionPackage:
    """One entry of the version table."""

    version: ProtocolVersion
    build_router: Callable[[HandlerDeps], Router]
    commands: CommandSet
    adapt: Adapter | None = None  # None: the operations' requests are this version's as they are

"""The narrow interfaces the parts of the daemon are given (the composition root is csms/app.py).

Each part names only what it uses: a handler gets a :class:`StationSession` and the store
Protocols of its block, the grid gets :class:`GridCommands` and a :class:`Bus`, the operator API
gets the registry of station links and the :class:`Commands`. Each Protocol here is also an
extension point: a bus on Redis Streams, a connection registry shared by several nodes, commands
routed to the node that holds the station's socket, a simulated :class:`Clock`. Nothing in this
module does anything; it only says what is expected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from csms.domain.events import Event
from csms.protocol.version import ProtocolVersion

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Request, Response

    from csms.grid.model.limits import LimitSignal

Listener = Callable[[Event], None]
Payload = dict[str, Any]


class Clock(Protocol):
    """The time the grid plans with (UTC, timezone-aware); injectable for tests and the demo."""

    def __call__(self) -> datetime: ...


class Component(Protocol):
    """A part of the daemon with its own lifecycle (grid controller, operator API ...)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Spawner(Protocol):
    """Runs background jobs owned by the daemon: kept referenced, failures logged, cancelled at stop."""

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]: ...


class Bus(Protocol):
    """Domain events from the edge and the grid to whoever listens (csms.bus.LocalBus in one process)."""

    def publish(self, event: Event) -> None: ...

    def subscribe(self, listener: Listener, prefix: str | None = None) -> Callable[[], None]:
        """Call ``listener`` for events whose kind starts with ``prefix``; returns the unsubscribe."""
        ...

    def queue(self, prefix: str | None = None, maxsize: int = 10000) -> tuple[asyncio.Queue[Event], Callable[[], None]]:
        """A bounded queue of matching events that loses its oldest when full; and the unsubscribe."""
        ...


# The protocol edge ------------------------------------------------------------------------------
class StationSession(Protocol):
    """What a station-initiated handler sees of the connection it answers."""

    @property
    def station_id(self) -> str: ...

    @property
    def version(self) -> ProtocolVersion: ...

    accepted: bool  # may send more than BootNotification

    def publish(self, event: Event) -> None:
        """Publish ``event`` once the answer to the current CALL has been sent."""
        ...

    def after(self, job: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run ``job`` once the answer has been sent (for calls to this same station)."""
        ...

    async def call(self, action: str, payload: Payload, timeout: float | None = None) -> Payload: ...


class StationLink(StationSession, Protocol):
    """A connected station as the rest of the daemon sees it (the registry's entries)."""

    @property
    def remote(self) -> str: ...

    connected_at: datetime

    async def close(self, code: int, reason: str) -> None: ...


#: Connected stations by id. In one process a dict; several nodes would share a registry that
#: knows which node holds which socket.
ConnectionRegistry = Mapping[str, StationLink]

class Presence(Protocol):
    """Told when a station's websocket opens and closes here (several nodes: the station -> node directory)."""

    async def arrived(self, station_id: str) -> None: ...

    async def departed(self, station_id: str) -> bool:
        """Release the station and mark its record disconnected, unless another node holds it by now
        (False: it is connected elsewhere; its record is left as that node wrote it)."""
        ...


class StationDirectory(Protocol):
    """Which node holds which station (several nodes on one Redis), and running commands there."""

    @property
    def node_id(self) -> str: ...

    async def owner(self, station_id: str) -> str | None:
        """The node holding the station's socket (only nodes with a live lease count)."""
        ...

    async def live_owners(self) -> dict[str, str]:
        """station -> node, for every station held by a node with a live lease."""
        ...

    async def forward(self, node: str, request: Payload) -> Payload:
        """Run a command on ``node``; its answer, or what it raised there (CallTimeout if none in time)."""
        ...


#: A check run during the websocket handshake (e.g. authentication): a Response refuses, None admits.
HandshakeCheck = Callable[["ServerConnection", "Request", str], Awaitable["Response | None"]]


class CertificateSigner(Protocol):
    """Answers SignCertificate (and delivers CertificateSigned afterwards)."""

    async def __call__(self, session: StationSession, payload: Payload, /) -> Payload: ...


class GatedSession(Protocol):
    """The slice of a connection the message gate needs to refuse a CALL."""

    @property
    def station_id(self) -> str: ...

    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class MessageGate(Protocol):
    """The per-station CALL rate cap, consulted once per incoming CALL."""

    def admit(self, station_id: str) -> bool: ...

    async def refuse(self, session: GatedSession, unique_id: str) -> None: ...


# Commands ---------------------------------------------------------------------------------------
class GridCommands(Protocol):
    """The CSMS-initiated calls the grid controller makes."""

    async def set_charging_profile(self, station_id: str, evse_id: int, profile: Payload,
                                   timeout: float | None = None) -> Payload: ...

    async def get_variables(self, station_id: str, items: list[Payload]) -> Payload: ...

    async def get_charging_profiles(self, station_id: str, request_id: int, *, evse_id: int | None = None,
                                    purpose: str | None = None) -> Payload: ...


class Commands(GridCommands, Protocol):
    """Every CSMS-initiated call, typed, plus the generic path; built per station's OCPP version.

    Raises InvalidRequest (never sent), OcppError (the station's CALLERROR), CallTimeout or
    StationOffline. A node that does not hold the station's socket could route these to one that does.
    """

    async def call(self, station_id: str, action: str, payload: Payload, timeout: float | None = None) -> Payload: ...

    async def operation(self, station_id: str, action: str, payload: Payload, timeout: float | None = None) -> Payload:
        """A request in the domain's (2.0.1) terms, sent as the station's OCPP version spells it."""
        ...

    async def flush_records(self) -> None: ...

    async def clear_charging_profile(self, station_id: str, *, profile_id: int | None = None,
                                     evse_id: int | None = None, purpose: str | None = None,
                                     stack_level: int | None = None) -> Payload: ...

    async def get_charging_profiles(self, station_id: str, request_id: int, *, evse_id: int | None = None,
                                    purpose: str | None = None, profile_ids: list[int] | None = None,
                                    stack_level: int | None = None, limit_source: list[str] | None = None) -> Payload:
        ...

    async def get_composite_schedule(self, station_id: str, evse_id: int, duration_s: int,
                                     unit: str | None = None) -> Payload: ...

    async def request_start_transaction(self, station_id: str, remote_start_id: int, id_token: Payload,
                                        evse_id: int | None = None,
                                        charging_profile: Payload | None = None) -> Payload: ...

    async def request_stop_transaction(self, station_id: str, transaction_id: str) -> Payload: ...

    async def get_transaction_status(self, station_id: str, transaction_id: str | None = None) -> Payload: ...

    async def reset(self, station_id: str, type_: str = "OnIdle", evse_id: int | None = None) -> Payload: ...

    async def change_availability(self, station_id: str, status: str, evse_id: int | None = None,
                                  connector_id: int | None = None) -> Payload: ...

    async def unlock_connector(self, station_id: str, evse_id: int, connector_id: int) -> Payload: ...

    async def trigger_message(self, station_id: str, requested_message: str, evse_id: int | None = None,
                              connector_id: int | None = None) -> Payload: ...

    async def set_variables(self, station_id: str, items: list[Payload]) -> Payload: ...

    async def get_base_report(self, station_id: str, request_id: int,
                              report_base: str = "FullInventory") -> Payload: ...


# The grid ---------------------------------------------------------------------------------------
class SignalSource(Component, Protocol):
    """Where grid limits come from (MQTT, the OpenADR 3 VEN, the UFTP aggregator). A source validates and
    hands every signal to the :class:`LimitIntake` it was built with, naming itself as ``source``
    in the limit book, and reports when it cannot be heard (e.g. its broker is down), so the
    groups that depend on it go to safe mode."""

    name: str

    def outage(self, now: datetime) -> str | None:
        """Why this source cannot currently deliver signals (long enough to matter), or None."""
        ...


class NotificationReceiver(Protocol):
    """An adapter that takes calls from a grid operator's server on the API port (the OpenADR VEN's
    webhook): it verifies the caller itself and answers (HTTP status, detail)."""

    def notified(self, bearer: str | None, body: Any) -> tuple[int, str]: ...


class LimitIntake(Protocol):
    """The one door every limit signal goes through (signal sources and the operator API)."""

    def knows(self, transformer_id: str) -> bool: ...

    @property
    def transformer_ids(self) -> list[str]: ...

    async def submit(self, transformer_id: str, payload: bytes | str | Payload) -> LimitSignal:
        """Validate and apply a signal as if it arrived live; raises SignalError naming the problem.
        Returns once the signal is stored (it survives a restart)."""
        ...

    async def clear(self, transformer_id: str, source: str) -> LimitSignal | None:
        """Take the signal of ``source`` out of force for good; None if there was none (KeyError:
        unknown group)."""
        ...


class GridService(Protocol):
    """What the operator API reads and asks of the grid control."""

    @property
    def limits(self) -> LimitIntake: ...

    def snapshot(self) -> Payload: ...

    def recent_events(self, limit: int) -> list[Payload]: ...

    def load_history(self, transformer_id: str, since: datetime | None = None) -> Payload:
        """Per point: time, total, EV and non-EV load, limit, planned, peak (KeyError: no such group)."""
        ...

    def set_session_need(self, station_id: str, evse_id: int, energy_kwh: float | None = None,
                         departure: datetime | None = None, guaranteed_kwh: float | None = None) -> Payload: ...

    async def stored(self) -> None:
        """Returns once everything the grid was told so far is durable (persist before acknowledge)."""
        ...

"""Grid control with several nodes: one elected controller, fenced pushes routed to the stations' nodes.

One node at a time leads the grid (every capacity group of the installation). It wins a leader key
(``<prefix>cluster:grid:leader``, a lease like a node's) and with it a fencing token: the value of
``<prefix>cluster:grid:epoch``, incremented at every election. The leader builds the grid part as a
single node would (limits, sessions and pushed profiles read back from the shared store), hears the
other nodes' station events through the shared event stream (:class:`GridFeed`), and sends its
commands through :class:`RoutedGridCommands`: to a station on its own node directly, to one on
another node through that node's inbox. Whichever node holds the station checks the token against
the current epoch before it sends (:class:`Fence`), so a leader that was paused or cut off past its
lease, and lost the election meanwhile, can never push again. A node that loses the lease stops its
grid part at once; the next leader rebuilds from the store. See docs/scale-out.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
import typing
from collections.abc import Awaitable, Callable, Container, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from csms.bus import LocalBus
from csms.domain.events import (
    ChargingProfilesReported,
    EvChargingNeeds,
    Event,
    MeterValuesReceived,
    StationBooted,
    StationConnected,
    StationDisconnected,
    StationMonitoringEvent,
    TransactionChanged,
)
from csms.domain.meter import Reading
from csms.domain.records import TransactionRecord
from csms.errorlog import ErrorLog
from csms.interfaces import Bus, GridCommands, GridService, LimitIntake, Listener, Spawner
from csms.lease_keeper import LeaseKeeper
from csms.protocol.errors import StationOffline
from csms.protocol.version import ProtocolVersion
from csms.store.base import TransactionStore
from csms.store.redis_clients import async_client
from csms.tasks import cancel_and_wait

log = logging.getLogger("csms.cluster.grid")

Payload = dict[str, Any]

#: The station events the grid controller learns sessions from; the nodes share them typed.
GRID_EVENTS: tuple[type[Event], ...] = (StationConnected, StationDisconnected, StationBooted, TransactionChanged,
                                        MeterValuesReceived, EvChargingNeeds, ChargingProfilesReported,
                                        StationMonitoringEvent)
_BY_NAME = {cls.__name__: cls for cls in GRID_EVENTS}
#: Events from other nodes held while a new leader reads its state back (beyond this, the oldest go).
HELD_MAX = 100_000
#: The grid commands a node runs for the leader (nothing else is reachable this way).
GRID_METHODS = frozenset({"set_charging_profile", "get_variables", "get_charging_profiles"})


class StaleLeader(Exception):
    """A grid command from a leader that is no longer the elected one (its token is older)."""


# Typed events across nodes ---------------------------------------------------------------------
def grid_message(ev: Event) -> dict[str, Any]:
    """A grid event, every field, as a JSON-ready object (datetimes become ISO text when dumped)."""
    return {"type": type(ev).__name__, "fields": {f.name: getattr(ev, f.name) for f in dataclasses.fields(ev)}}


def encode_event(ev: Event) -> bytes:
    """A grid event, every field, as JSON (datetimes ISO, the reading as an object)."""
    return orjson.dumps(grid_message(ev), option=orjson.OPT_NON_STR_KEYS)


def _field_value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    args = typing.get_args(hint)
    if hint is datetime or datetime in args:
        return datetime.fromisoformat(value)
    if hint is Reading or Reading in args:
        return Reading(**value)
    if typing.get_origin(hint) is tuple:
        return tuple(value)
    return value


_HINTS: dict[str, dict[str, Any]] = {}


def _field_hints(cls: type[Event]) -> dict[str, Any]:
    """The field types of a grid event class, resolved once (``typing.get_type_hints`` costs about
    60 us a call: the grid leader decodes every station event of the other nodes)."""
    hints = _HINTS.get(cls.__name__)
    if hints is None:
        every = typing.get_type_hints(cls)
        hints = _HINTS[cls.__name__] = {f.name: every[f.name] for f in dataclasses.fields(cls)}
    return hints


def decode_event(raw: str | bytes) -> Event:
    """The event :func:`encode_event` wrote (ValueError/TypeError/KeyError when it is malformed or unknown)."""
    return event_from_message(orjson.loads(raw))


def event_from_message(message: Any) -> Event:
    """The event of a :func:`grid_message` read back from JSON (ValueError/TypeError/KeyError when malformed)."""
    cls = _BY_NAME[message["type"]]
    hints = _field_hints(cls)
    fields = message["fields"]
    if not isinstance(fields, dict):
        raise TypeError("fields is not an object")
    return cls(**{name: _field_value(hints[name], value) for name, value in fields.items() if name in hints})


class GridFeed:
    """The bus as the leader's grid part sees it: its own node's events as they happen, and the other
    nodes' station events (typed, from the shared stream). Publishing goes to the node's bus only.
    Until :meth:`release`, the others' events are held, so none is lost while the state is read back.

    Another node's "disconnected" for a station connected now, here or to another node, is stale
    and dropped: a node sweeping a dead node's stations announces them gone, and those that
    reconnect here tell this node's bus at once, while the sweep's announcement comes through the
    stream (held for the whole takeover); those that reconnect to a third node may have their
    "connected" in the stream before the sweep's "disconnected". Applied after it, it marked a
    quarter of the moved stations disconnected for good in the 30,000-station failover (702 of
    10,000 through third nodes in a later run), and they were never controlled again. So another
    node's "disconnected" passes only once the directory (``owner``) says no live node holds the
    station and no "connected" of it came meanwhile."""

    def __init__(self, bus: Bus, here: Container[str] = (),
                 owner: Callable[[str], Awaitable[str | None]] | None = None) -> None:
        self._bus = bus
        self._here = here  # the stations connected to this node (live)
        self._owner = owner  # the directory: which live node holds a station's socket now
        self._others = LocalBus()  # the other nodes' events, to the same listeners
        self._held: list[Event] | None = []
        self._connects: dict[str, int] = {}  # per station: other nodes' "connected" passed on so far
        self._confirming: set[asyncio.Task[None]] = set()
        self._lookups_failing = False
        self._stopped = False
        self.released = 0  # how many events were held until release()

    def publish(self, event: Event) -> None:
        self._bus.publish(event)

    def subscribe(self, listener: Listener, prefix: str | None = None) -> Callable[[], None]:
        local, others = self._bus.subscribe(listener, prefix), self._others.subscribe(listener, prefix)

        def unsubscribe() -> None:
            local()
            others()
        return unsubscribe

    def queue(self, prefix: str | None = None, maxsize: int = 10000) -> tuple[asyncio.Queue[Event], Callable[[], None]]:
        return self._bus.queue(prefix, maxsize)

    def remote(self, event: Event) -> None:
        """Another node's station event (none is taken once the feed stopped)."""
        if self._stopped:
            return
        if self._held is not None:
            if len(self._held) >= HELD_MAX:
                del self._held[0]
            self._held.append(event)
        elif isinstance(event, StationDisconnected):
            if event.station_id not in self._here:
                self._pass_if_gone(event)
        else:
            if isinstance(event, StationConnected) and event.station_id is not None:
                self._connects[event.station_id] = self._connects.get(event.station_id, 0) + 1
            self._others.publish(event)

    def _pass_if_gone(self, event: StationDisconnected) -> None:
        """Pass another node's "disconnected" on once the directory confirms no live node holds the
        station. A node releases a station from the directory before it announces it gone, and a
        node a station reconnects to claims it before it announces it back; so a station held by a
        node when the announcement has arrived came back after it (through another node, whose
        "connected" may reach the stream first), and the announcement is stale."""
        sid = event.station_id
        if self._owner is None or sid is None:
            self._others.publish(event)
            return
        task = asyncio.get_running_loop().create_task(self._confirm_gone(event, sid, self._connects.get(sid, 0)),
                                                      name=f"grid feed: is {sid} gone")
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _confirm_gone(self, event: StationDisconnected, sid: str, connects_before: int) -> None:
        assert self._owner is not None
        try:
            owner = await self._owner(sid)
            self._lookups_failing = False
        except Exception as exc:  # noqa: BLE001 - the directory unreachable: take the announcement as it is
            if not self._lookups_failing:  # once per outage, not once per station
                log.warning("grid feed: could not check whether %s is gone (%s); taken as gone", sid, exc)
            self._lookups_failing = True
            owner = None
        if self._stopped:  # a cancellation inside the lookup can come back as an error: the term is over
            return
        if owner is None and self._connects.get(sid, 0) == connects_before and sid not in self._here:
            self._others.publish(event)

    def release(self) -> int:
        """The grid part listens now: deliver what was held, then pass events on as they come;
        returns how many were held."""
        held, self._held = self._held or [], None
        for event in held:
            self.remote(event)
        self.released += len(held)
        return len(held)

    async def stop(self) -> None:
        """The term is over: take no more events, and cancel and await the directory checks under way
        (left running, they would pass events to a stopped grid part, or be destroyed pending)."""
        self._stopped = True
        tasks = list(self._confirming)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# Election and fencing -------------------------------------------------------------------------------
# Take the leader key if nobody holds it; the new epoch is the fencing token. A counter that is gone
# (Redis lost its data) starts again from the wall clock in ms, above every token handed out before.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[4]) end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. epoch .. '|' .. ARGV[2], 'PX', ARGV[3])
return epoch
"""
# Renew only if the key still holds exactly our value (node, epoch, API address).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Leader:
    """Who leads the grid now, as the leader key says."""

    node: str
    epoch: int
    api_url: str


def parse_leader(value: str | None) -> Leader | None:
    if not value:
        return None
    node, _, rest = value.partition("|")
    epoch, _, api_url = rest.partition("|")
    try:
        return Leader(node, int(epoch), api_url)
    except ValueError:
        return None


K = typing.TypeVar("K")
V = typing.TypeVar("V")


class Batched(typing.Generic[K, V]):
    """Many concurrent requests of one kind as few Redis round trips: requests made while no batch
    is on its way go out together in the next one; those made while one is on its way, in the one
    after it (so each answer was read after its request was made). A wave of thousands of grid
    pushes costs a handful of round trips, and never more connections than one.

    ``fetch`` gets the distinct keys of one batch (at most ``limit``) and returns a value for each."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]], limit: int = 1000) -> None:
        self._fetch = fetch
        self._limit = limit
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._running = False
        self._task: asyncio.Task[None] | None = None  # referenced, so it is not collected mid-batch

    async def get(self, key: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if not self._running:
            self._running = True
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                keys = list(itertools.islice(self._waiting, self._limit))
                batch = {key: self._waiting.pop(key) for key in keys}
                try:
                    values = await self._fetch(keys)
                except Exception as exc:  # noqa: BLE001 - every waiter of the batch gets the error
                    for futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for key, futures in batch.items():
                    for future in futures:
                        if not future.done():
                            future.set_result(values[key])
        finally:
            self._running = False


#: Connections a node's cluster client opens at most; beyond, callers queue for one (no error).
REDIS_CONNECTIONS = 64


def shared_client(redis_url: str, wait_s: float) -> aioredis.Redis:
    """A client whose callers queue for a connection under a burst (up to ``wait_s``), where the
    default pool would open ever more sockets and then fail with "Too many connections": a burst
    of connecting stations must not cost a node its lease renewal."""
    return async_client(redis_url, wait_s=wait_s, max_connections=REDIS_CONNECTIONS)


def own_client(redis_url: str) -> aioredis.Redis:
    """A client of its own (blocking reads, the lease): a plain pool."""
    return async_client(redis_url)


class Fence:
    """The check a node makes before it sends a grid command: the token must be the current epoch
    (read after the command asked; concurrent checks share one read, see :class:`Batched`)."""

    def __init__(self, redis: aioredis.Redis, epoch_key: str) -> None:
        self._redis = redis
        self._key = epoch_key
        self._reads: Batched[None, int] = Batched(self._read)

    async def _read(self, keys: list[None]) -> dict[None, int]:
        value = await self._redis.get(self._key)
        return {None: int(value) if value is not None else 0}

    async def current(self) -> int:
        return await self._reads.get(None)

    async def admit(self, token: int) -> None:
        current = await self.current()
        if token != current:
            raise StaleLeader(f"grid command with fencing token {token} refused: the current epoch is {current}")


Term = Callable[[int], Coroutine[Any, Any, None]]


class GridLeadership:
    """This node's part in electing the grid controller: it campaigns while its node lease lives,
    starts the grid part (``lead``) when it wins and stops it (``resign``) the moment it can no
    longer be sure it leads (its key not renewed within a lease, or someone else's)."""

    def __init__(self, redis_url: str, prefix: str, node_id: str, *, lease_s: float, api_url: Callable[[], str],
                 lead: Term, resign: Callable[[], Awaitable[None]], node_lease: Callable[[], bool],
                 spawner: Spawner, errors: ErrorLog, keeper: LeaseKeeper) -> None:
        self.node_id = node_id
        self.lease_s = lease_s
        self._redis: aioredis.Redis = shared_client(redis_url, lease_s)
        self._key = f"{prefix}cluster:grid:leader"
        self.fence = Fence(self._redis, f"{prefix}cluster:grid:epoch")
        self._epoch_key = f"{prefix}cluster:grid:epoch"
        self._acquire = self._redis.register_script(_ACQUIRE)
        # Renewed by the node's lease keeper (its own thread): a takeover keeping the loop busy for
        # seconds must not let the key lapse, or the next node would start the takeover anew.
        self._renew = keeper.client.register_script(_RENEW)
        self._keeper = keeper
        self._resign_script = self._redis.register_script(_RESIGN)
        self._api_url = api_url
        self._lead = lead
        self._resign = resign
        self._node_lease = node_lease
        self._spawner = spawner
        self._errors = errors
        self.token: int | None = None
        self._value = ""
        self._until = 0.0  # monotonic time until which our last renewal holds
        self._refused = ""  # the value of ours a renewal found replaced (the loop steps down)
        self._term: asyncio.Task[Any] | None = None
        self._loop: asyncio.Task[Any] | None = None
        self.terms = 0  # how often this node has led (tests, logs)

    @property
    def leading(self) -> bool:
        """Whether this node surely still leads (its last renewal is younger than a lease)."""
        return self.token is not None and time.monotonic() < self._until

    def token_now(self) -> int:
        """Our fencing token, if we surely still lead (StaleLeader otherwise: nothing may go out)."""
        if self.token is None or not self.leading:
            raise StaleLeader(f"node {self.node_id} does not lead the grid (any more)")
        return self.token

    async def leader(self) -> Leader | None:
        value = await self._redis.get(self._key)
        return parse_leader(str(value) if value is not None else None)

    async def start(self) -> None:
        self._keeper.add("grid leader renewal", self._renew_key)
        self._loop = self._spawner.spawn(self._campaign_forever(), "grid leadership")

    def _renew_key(self, client: Any) -> None:
        """Renew our leader key if we lead (in the keeper's thread); one found replaced or gone is
        left to the loop to step down from."""
        value = self._value
        if self.token is None or not value:
            return
        sent = time.monotonic()
        if self._renew(keys=[self._key], args=[value, int(self.lease_s * 1000)], client=client):
            if self._value == value:
                self._until = sent + self.lease_s
        else:
            self._refused = value

    async def stop(self) -> None:
        if self._loop is not None:  # its Redis calls may turn or swallow a cancel: cancel until it ends
            await cancel_and_wait([self._loop])
        if self.token is not None:
            await self._step_down("the node stops")
            with contextlib.suppress(Exception):  # graceful: the next leader need not wait for the lease
                await self._resign_script(keys=[self._key], args=[self._value])
        await self._redis.aclose()

    async def _campaign_forever(self) -> None:
        interval = self.lease_s / 3
        while True:
            try:
                await self._round()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a Redis outage
                self._errors.failed(log, "grid leadership", exc, "leadership not renewed")
            else:
                if self._errors.active:
                    self._errors.succeeded(log, "grid leadership")
            if self.token is not None and not self.leading:
                await self._step_down("its leader key was not renewed within a lease")
            await asyncio.sleep(interval)

    async def _round(self) -> None:
        sent = time.monotonic()
        px = int(self.lease_s * 1000)
        if self.token is not None:
            if self._refused and self._refused == self._value:
                await self._step_down("another node holds the leader key")
            return
        if not self._node_lease():
            return
        api = self._api_url()
        epoch = int(await self._acquire(keys=[self._key, self._epoch_key],
                                        args=[self.node_id, api, px, int(time.time() * 1000)]))
        if epoch:
            self.token, self._value, self._until = epoch, f"{self.node_id}|{epoch}|{api}", sent + self.lease_s
            self._refused = ""
            self.terms += 1
            log.info("grid: node %s leads the grid controller (epoch %d)", self.node_id, epoch)
            self._term = self._spawner.spawn(self._lead(epoch), "grid leader term")

    async def _step_down(self, why: str) -> None:
        log.warning("grid: node %s stops leading the grid controller (epoch %s): %s", self.node_id, self.token, why)
        self.token = None
        term, self._term = self._term, None
        if term is not None and not term.done():
            term.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await term
        await self._resign()


# Commands to the stations, wherever they are ------------------------------------------------------
class Directory(typing.Protocol):
    """Where stations are and how to reach another node (csms.cluster.Cluster)."""

    async def owner(self, station_id: str) -> str | None: ...

    async def forward(self, node: str, request: Payload) -> Payload: ...


class RoutedGridCommands:
    """The leader's grid commands: each carries its fencing token; one for a station on this node is
    checked here and sent, one for a station on another node goes to that node, which checks it."""

    def __init__(self, local: GridCommands, here: Mapping[str, object], directory: Directory,
                 leadership: GridLeadership) -> None:
        self._local = local
        self._here = here
        self._directory = directory
        self._leadership = leadership

    async def set_charging_profile(self, station_id: str, evse_id: int, profile: Payload,
                                   timeout: float | None = None) -> Payload:
        return await self._run(station_id, "set_charging_profile", {"evse_id": evse_id, "profile": profile})

    async def get_variables(self, station_id: str, items: list[Payload]) -> Payload:
        return await self._run(station_id, "get_variables", {"items": items})

    async def get_charging_profiles(self, station_id: str, request_id: int, *, evse_id: int | None = None,
                                    purpose: str | None = None) -> Payload:
        return await self._run(station_id, "get_charging_profiles",
                               {"request_id": request_id, "evse_id": evse_id, "purpose": purpose})

    async def _run(self, station_id: str, method: str, args: Payload) -> Payload:
        token = self._leadership.token_now()
        if station_id in self._here:
            return await run_grid_command(self._local, self._leadership.fence, station_id, method, args, token)
        node = await self._directory.owner(station_id)
        if node is None:
            raise StationOffline(station_id)
        return await self._directory.forward(node, {"kind": "grid", "station_id": station_id, "method": method,
                                                    "args": args, "token": token})


async def run_grid_command(commands: GridCommands, fence: Fence, station_id: str, method: str, args: Payload,
                           token: int) -> Payload:
    """Send one grid command to a station on this node, if ``token`` is the current epoch."""
    if method not in GRID_METHODS:
        raise ValueError(f"unknown grid command {method!r}")
    await fence.admit(token)
    if method == "set_charging_profile":
        return await commands.set_charging_profile(station_id, int(args["evse_id"]), args["profile"])
    if method == "get_variables":
        return await commands.get_variables(station_id, list(args["items"]))
    return await commands.get_charging_profiles(station_id, int(args["request_id"]), evse_id=args.get("evse_id"),
                                                purpose=args.get("purpose"))


async def execute_grid_forwarded(commands: GridCommands, fence: Fence, request: Payload) -> Payload:
    """A grid command the leader forwarded to this node (its inbox)."""
    args = request.get("args")
    if not isinstance(args, dict):
        raise ValueError("grid command without args")
    return await run_grid_command(commands, fence, str(request["station_id"]), str(request.get("method")), args,
                                  int(request["token"]))


# Drift repair ------------------------------------------------------------------------------------
#: How often the leader compares its sessions with the running transactions in the store.
RECONCILE_S = 30.0
RECONCILE_MAX = 100_000


class Running(typing.Protocol):
    """A session as the leader holds it (csms.grid.model.sessions.Session)."""

    @property
    def station_id(self) -> str: ...

    @property
    def transaction_id(self) -> str: ...

    @property
    def evse_id(self) -> int: ...


async def reconcile_sessions(transactions: TransactionStore, sessions: Iterable[Running], feed: GridFeed) -> int:
    """Events the leader missed (the shared stream is bounded and best effort), told again from the
    store: a session whose transaction the store has ended ends; a running transaction without a
    session starts one, unless its EVSE has a session (a newer transaction whose predecessor the
    store never saw end). Returns how many were told."""
    records = await transactions.list_transactions(active=True, limit=RECONCILE_MAX)
    running = {(r.station_id, r.transaction_id): r for r in records}
    now = list(sessions)
    held = {(s.station_id, s.transaction_id) for s in now}
    occupied = {(s.station_id, s.evse_id) for s in now}
    told = 0
    for station_id, transaction_id in held - running.keys():
        record = await transactions.get_transaction(station_id, transaction_id)
        if record is not None and not record.active:  # ended in the store: the Ended event was lost
            feed.remote(TransactionChanged(station_id=station_id, event_type="Ended", transaction_id=transaction_id,
                                           evse_id=record.evse_id))
            told += 1
    missed = sorted((running[key] for key in running.keys() - held), key=_started, reverse=True)
    for record in missed:  # the newest first: on one EVSE, the newest running transaction is the car there
        if record.evse_id is not None and record.evse_id > 0 and (record.station_id, record.evse_id) not in occupied:
            occupied.add((record.station_id, record.evse_id))
            feed.remote(TransactionChanged(station_id=record.station_id, event_type="Updated",
                                           transaction_id=record.transaction_id, evse_id=record.evse_id))
            told += 1
    return told


def _started(record: TransactionRecord) -> float:
    return record.started_at.timestamp() if record.started_at is not None else 0.0


async def reconcile_forever(transactions: TransactionStore, sessions: Iterable[Running], feed: GridFeed,
                            errors: ErrorLog, every_s: float = RECONCILE_S) -> None:
    """The leader's drift repair, once per ``every_s`` for as long as its term lasts."""
    while True:
        await asyncio.sleep(every_s)
        try:
            told = await reconcile_sessions(transactions, sessions, feed)
        except Exception as exc:  # noqa: BLE001 - the loop must outlive a store outage
            errors.failed(log, "grid session reconcile", exc, "sessions not compared with the store")
            continue
        if told:
            log.warning("grid: %d session change(s) the shared event stream had not brought, taken from the store",
                        told)


@dataclass(frozen=True)
class RemoteLink:
    """A station connected to another node, as the grid part needs to know it at the start of a term."""

    station_id: str
    version: ProtocolVersion


class NotLeading(RuntimeError):
    """This node runs no grid part at this moment (another node leads, or nobody yet)."""


class LeadingGrid:
    """The grid part as the API of a node sees it across leadership terms: this node's current
    term's grid, or :class:`NotLeading` between terms (the API forwards to the leader then)."""

    def __init__(self, current: Callable[[], GridService | None], about: Callable[[], Payload]) -> None:
        self._current = current
        self._about = about

    def _grid(self) -> GridService:
        grid = self._current()
        if grid is None:
            raise NotLeading("this node does not run the grid controller now")
        return grid

    @property
    def limits(self) -> LimitIntake:
        return self._grid().limits

    def snapshot(self) -> Payload:
        """The grid's state, with which node runs its controller (and its fencing token)."""
        return {**self._grid().snapshot(), "controller": self._about()}

    def recent_events(self, limit: int) -> list[Payload]:
        return self._grid().recent_events(limit)

    def load_history(self, transformer_id: str, since: datetime | None = None) -> Payload:
        return self._grid().load_history(transformer_id, since)

    def set_session_need(self, station_id: str, evse_id: int, energy_kwh: float | None = None,
                         departure: datetime | None = None, guaranteed_kwh: float | None = None) -> Payload:
        return self._grid().set_session_need(station_id, evse_id, energy_kwh, departure, guaranteed_kwh)

    async def stored(self) -> None:
        await self._grid().stored()

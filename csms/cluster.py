"""Several daemon nodes on one Redis: node leases, the station -> node directory, command forwarding.

Every node holds a lease key (``<prefix>cluster:lease:<node>``, a few seconds' TTL, renewed three
times per lease). The directory (hash ``<prefix>cluster:owners``: station -> node) records which
node holds each station's websocket; an entry counts only while its node's lease lives, so a dead
node's stations are released when its lease expires, without anyone cleaning up (a sweep then
deletes such entries and marks the stations disconnected in the store). A node's inbox (list
``<prefix>cluster:inbox:<node>``) carries commands forwarded to it and the replies to the commands
it forwarded; one reader per node takes both. Every node's bus events also go to one bounded
stream (``<prefix>cluster:events``), and each node republishes the others' on its own bus as
:class:`RemoteEvent`, so any node's live event stream shows every node's events. See docs/scale-out.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

import orjson
import redis.asyncio as aioredis

from csms.cluster_grid import (
    GRID_EVENTS,
    Batched,
    GridFeed,
    decode_event,
    event_from_message,
    grid_message,
    own_client,
    shared_client,
)
from csms.domain.events import Event
from csms.errorlog import ErrorLog
from csms.interfaces import Bus, Spawner
from csms.lease_keeper import LeaseKeeper, Outcome
from csms.ocpp.v201.operations import BodyError
from csms.protocol.errors import CallTimeout, OcppError, StationOffline
from csms.store.redis_store import connection_fields
from csms.tasks import cancel_and_wait

log = logging.getLogger("csms.cluster")

Payload = dict[str, Any]
#: Runs one forwarded command on this node (the API's typed or generic command path).
Executor = Callable[[Payload], Awaitable[Payload]]
#: The store's key of a station's record (RedisStore.keys.station): the sweep marks it disconnected.
StationKey = Callable[[str], str]

#: A loop that has not run for this many leases is hung, not busy: its leases are left to lapse.
STALL_LEASES = 3.0
#: An inbox nobody reads (its node died) disappears this long after its last message.
INBOX_TTL_MS = 60_000
#: The shared event stream keeps about this many events (XADD MAXLEN ~).
EVENTS_MAXLEN = 2_000
#: Events waiting to go to the stream; beyond this the oldest are dropped (Redis slower than the bus).
EVENTS_QUEUE = 10_000
EVENTS_BATCH = 500
#: Events packed into one stream entry: a wave's thousands of events cost a few XADDs and entries
#: to parse, not one each (the stream was a sixth of a node's CPU in a 10,000-station wave).
EVENTS_PER_ENTRY = 100
#: Stream entries read at once.
ENTRIES_PER_READ = 20
#: Inbox messages taken at once after the first of a burst.
INBOX_BATCH = 500
OWNERS_PER_READ = 1000  # directory entries read in one round trip (a sweep re-checks thousands)


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteEvent(Event):
    """An event another node published, as its live stream showed it (kind, station, time, data).
    Only subscribers by kind prefix see it as that kind; none that picks events by type acts on it."""

    KIND: ClassVar[str] = "remote"
    remote_kind: str
    node: str
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.remote_kind

    def data(self) -> dict[str, Any]:
        return dict(self.payload)


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def packed_fields(node: str, events: Sequence[Event]) -> dict[str, str | bytes]:
    """Several events as one stream entry: ``node`` and ``events``, a JSON list holding per event its
    ``kind``, ``station_id``, ``at``, ``data`` and, for the grid leader, ``grid`` (:func:`grid_message`)."""
    items = []
    for ev in events:
        item: dict[str, Any] = {"kind": ev.kind, "station_id": ev.station_id or "", "at": ev.at, "data": ev.data()}
        if isinstance(ev, GRID_EVENTS):  # the grid leader learns the other nodes' sessions from these
            item["grid"] = grid_message(ev)
        items.append(item)
    return {"node": node, "events": orjson.dumps(items, default=_default, option=orjson.OPT_NON_STR_KEYS)}


def remote_event(fields: Mapping[str, Any], node: str | None = None) -> RemoteEvent:
    """The event of a stream entry, or of one item of a packed entry with ``node`` given (ValueError,
    KeyError or TypeError if it is malformed)."""
    payload = fields["data"]
    if isinstance(payload, (str, bytes)):
        payload = orjson.loads(payload)
    if not isinstance(payload, dict):
        raise TypeError("data is not an object")
    return RemoteEvent(remote_kind=str(fields["kind"]), node=node or fields["node"], payload=payload,
                       station_id=fields.get("station_id") or None, at=datetime.fromisoformat(fields["at"]))


def unpacked(fields: Mapping[str, str]) -> list[tuple[RemoteEvent, Any]]:
    """The events of one stream entry, each with its grid part (None, or what :func:`typed_event`
    reads). An entry of one event (``kind``, ``data`` ... as fields, ``grid`` as JSON text) is what
    nodes before packed entries wrote: read too, so a cluster can be upgraded one node at a time.
    ValueError, KeyError or TypeError if the entry is malformed."""
    if "events" not in fields:
        return [(remote_event(fields), fields.get("grid") or None)]
    items = orjson.loads(fields["events"])
    if not isinstance(items, list):
        raise TypeError("events is not a list")
    node = fields["node"]
    return [(remote_event(item, node), item.get("grid")) for item in items]


def typed_event(grid: Any) -> Event:
    """The typed grid event of :func:`unpacked`'s grid part (ValueError, KeyError or TypeError if malformed)."""
    return decode_event(grid) if isinstance(grid, (str, bytes)) else event_from_message(grid)


# Delete a directory entry only if it still names the given node (a newer connection elsewhere wins).
_RELEASE = """
local removed = {}
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    removed[#removed + 1] = ARGV[i]
  end
end
return removed
"""

# The sweep's release: as _RELEASE, but only while the node's lease (KEYS[2]) is still gone. The sweep
# read the leases a moment before; a node that renewed and claimed its stations again since keeps them.
_RELEASE_DEAD = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
""" + _RELEASE

# Claim stations again after our lease lapsed, unless a node with a live lease took them meanwhile.
# Returned: {lost, back}: those no longer ours, and those the directory had released meanwhile (a
# sweep announced them as disconnected; the others still listed as ours were never released).
_RECLAIM = """
local lost, back = {}, {}
for i = 3, #ARGV do
  local owner = redis.call('HGET', KEYS[1], ARGV[i])
  if owner == ARGV[1] then
  elseif not owner or redis.call('EXISTS', ARGV[2] .. owner) == 0 then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
    back[#back + 1] = ARGV[i]
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return {lost, back}
"""

# The sweep's mark of released stations in the store: a record (KEYS[i - 2] for station ARGV[i]) says
# disconnected only while no node with a live lease (key prefix ARGV[1]) holds the station in the
# directory (KEYS[1]), and only if it exists (ARGV[2] counts the field/value pairs that follow, as
# redis_store.connection_fields makes them). A station that reconnected elsewhere after the release was
# written connected there, and an unconditional mark would overwrite that. Returns the stations marked.
_MARK_UNHELD = """
local n = tonumber(ARGV[2])
local fields = {}
for j = 3, 2 + 2 * n do fields[#fields + 1] = ARGV[j] end
local first = 3 + 2 * n
local marked = {}
for i = first, #ARGV do
  local key = KEYS[i - first + 2]
  local owner = redis.call('HGET', KEYS[1], ARGV[i])
  if (not owner or redis.call('EXISTS', ARGV[1] .. owner) == 0) and redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, unpack(fields))
    marked[#marked + 1] = ARGV[i]
  end
end
return marked
"""


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class NodeIdInUse(OSError):
    """Another live node renews the lease of this node id (an OSError: ``csms serve`` reports it as
    "cannot start")."""


class ForwardFailed(Exception):
    """The node holding the station failed to run a forwarded command (not the station's answer)."""


def wrap_outcome(response: Payload | None, exc: BaseException | None) -> Payload:
    """A command's outcome as sent back to the forwarding node (the exceptions the API maps to statuses)."""
    if exc is None:
        return {"ok": response}
    if isinstance(exc, StationOffline):
        return {"error": "offline"}
    if isinstance(exc, CallTimeout):
        return {"error": "timeout", "message": str(exc)}
    if isinstance(exc, BodyError):
        return {"error": "body", "field": exc.field, "message": exc.message}
    if isinstance(exc, OcppError):
        return {"error": "ocpp", "code": exc.code, "description": exc.description, "details": exc.details}
    return {"error": "failed", "message": f"{type(exc).__name__}: {exc}"[:500]}


def unwrap_outcome(station_id: str, outcome: Any) -> Payload:
    """The forwarded command's response, or the exception the holding node raised."""
    if not isinstance(outcome, dict):
        raise ForwardFailed(f"malformed reply {outcome!r:.200}")
    error = outcome.get("error")
    if error is None:
        response = outcome.get("ok")
        if not isinstance(response, dict):
            raise ForwardFailed(f"malformed reply {outcome!r:.200}")
        return response
    if error == "offline":
        raise StationOffline(station_id)
    if error == "timeout":
        raise CallTimeout(str(outcome.get("message", "")))
    if error == "body":
        raise BodyError(str(outcome.get("field", "")), str(outcome.get("message", "")))
    if error == "ocpp":
        details = outcome.get("details")
        raise OcppError(str(outcome.get("code", "GenericError")), str(outcome.get("description", "")),
                        details if isinstance(details, dict) else None)
    raise ForwardFailed(str(outcome.get("message", error)))


class Cluster:
    """This node's membership: its lease, its stations in the directory, its inbox."""

    def __init__(self, redis_url: str, prefix: str, node_id: str, *, lease_s: float, forward_timeout_s: float,
                 spawner: Spawner, errors: ErrorLog, station_key: StationKey) -> None:
        self.node_id = node_id
        self.lease_s = lease_s
        self.forward_timeout_s = forward_timeout_s
        self._prefix = f"{prefix}cluster:"
        self._owners = f"{self._prefix}owners"
        # A blocking pool: in a reconnect storm every arriving station writes the directory at once;
        # beyond the pool's size they queue for a connection instead of failing ("Too many connections").
        self._redis: aioredis.Redis = shared_client(redis_url, 30.0)
        # BLPOP holds its connection for up to a second: its own client, so it never starves the rest.
        self._reader: aioredis.Redis = own_client(redis_url)
        # The lease's own connection for taking it at start; renewed from a thread of its own
        # (LeaseKeeper), so neither a storm's directory writes nor a busy loop delay the renewals.
        self._beat: aioredis.Redis = own_client(redis_url)
        self.keeper = LeaseKeeper(redis_url, lease_s / 3, STALL_LEASES * lease_s, self._renewed)
        self.keeper.add("cluster heartbeat", self._keep_lease)
        self._spawner = spawner
        self._errors = errors
        self._station_key = station_key
        self._release = self._redis.register_script(_RELEASE)
        self._release_dead = self._redis.register_script(_RELEASE_DEAD)
        self._reclaim = self._redis.register_script(_RECLAIM)
        self._mark_unheld = self._redis.register_script(_MARK_UNHELD)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        # A grid leader's wave (thousands of pushes at once) looks up and posts in a few round trips.
        self._owners_of: Batched[str, str | None] = Batched(self._fetch_owners)
        self._posts: Batched[tuple[str, int, bytes], None] = Batched(self._push_posts)
        self._post_seq = itertools.count()
        self._tasks: list[asyncio.Task[Any]] = []
        self._sweeping: asyncio.Task[Any] | None = None  # the sweep in progress, run beside the heartbeat
        self._claim_due = False  # our lease had lapsed and our stations are not claimed again yet
        self._closing = False
        self._lease_until = 0.0  # monotonic time until which our last lease write holds
        self._events = f"{self._prefix}events"
        self._bus: Bus | None = None
        self._outbox: asyncio.Queue[Event] = asyncio.Queue(EVENTS_QUEUE)
        self.events_dropped = 0
        self.executor: Executor | None = None
        self.local: Callable[[], Iterable[str]] = lambda: ()  # the stations connected to this process
        self.grid_feed: GridFeed | None = None  # while this node leads the grid: the others' station events
        # Told which stations this node released (their node died) or claimed back after its lease had
        # lapsed: for the others (the grid leader) they left or came back then.
        self.on_release: Callable[[list[str]], None] = lambda stations: None
        self.on_reclaim: Callable[[list[str]], None] = lambda stations: None
        # Told which of our stations another node took while our lease had lapsed (close those sockets).
        self.on_lost: Callable[[list[str]], None] = lambda stations: None

    def _lease(self, node: str) -> str:
        return f"{self._prefix}lease:{node}"

    def _inbox(self, node: str) -> str:
        return f"{self._prefix}inbox:{node}"

    # Lifecycle ------------------------------------------------------------------------------------
    async def open(self) -> list[str]:
        """Take the lease and release what this node id held before (a restart) and what dead nodes
        hold; returns the stations released (the caller marks them disconnected).

        The keeper renews the lease from here on, not from :meth:`start`: this sweep (a restarted
        node's thousands of stations) and the rest of a slow node start can take longer than a lease.
        If the sweep fails the keeper stops again, or it would keep a node that never started alive."""
        await self._take_lease()
        self.keeper.start()
        try:
            released = await self.sweep(also=self.node_id)
        except BaseException:
            await self.keeper.stop()
            raise
        log.info("cluster node %s: lease %.1f s on %s", self.node_id, self.lease_s, self._prefix)
        return released

    @property
    def lease_held(self) -> bool:
        """Whether our lease surely still lives (readiness: a node without it must not take stations)."""
        return time.monotonic() < self._lease_until

    async def _set_lease(self, *, nx: bool = False) -> Any:
        """Take our lease if nobody holds it; returns what SET NX returns."""
        sent = time.monotonic()
        answer = await self._beat.set(self._lease(self.node_id), str(time.time()), px=int(self.lease_s * 1000),
                                      nx=nx)
        if answer is not None:
            self._lease_until = sent + self.lease_s
        return answer

    def _renew_lease(self, client: Any) -> float | None:
        """Renew our lease with the keeper's (synchronous) client; if it had lapsed, returns until when
        the renewal before held (None: it lived)."""
        held_until = self._lease_until
        sent = time.monotonic()
        previous = client.set(self._lease(self.node_id), str(time.time()), px=int(self.lease_s * 1000), get=True)
        self._lease_until = sent + self.lease_s
        return held_until if previous is None and not self._closing else None

    def _keep_lease(self, client: Any) -> None:
        """The keeper's renewal (in its thread): a lapse found is handed to the loop."""
        lapsed = self._renew_lease(client)
        if lapsed is not None:
            self.keeper.on_loop(self._lapsed_then_claim, lapsed)

    async def _take_lease(self) -> None:
        """Our lease, once nobody holds it: after a crash the old one lapses within a lease; one that
        is still renewed after that belongs to another live node with the same id (refused)."""
        deadline = time.monotonic() + self.lease_s + 1.0
        waited = False
        while not await self._set_lease(nx=True):
            if time.monotonic() > deadline:
                raise NodeIdInUse(f"cluster node id {self.node_id!r} is in use by a live node (its lease is "
                                  f"still renewed); give each node its own cluster.node_id")
            if not waited:
                log.info("cluster node %s: waiting up to %.1f s for the previous lease of this id to lapse",
                         self.node_id, self.lease_s)
                waited = True
            await asyncio.sleep(self.lease_s / 6)

    def attach_bus(self, bus: Bus) -> None:
        """Share this node's bus events with the others and theirs with this node's subscribers."""
        self._bus = bus
        bus.subscribe(self._outgoing)

    def start(self) -> None:
        """The heartbeat, the inbox and the shared events; the keeper too if :meth:`open` did not start it."""
        self.keeper.start()
        self._tasks = [self._spawner.spawn(self._heartbeat_forever(), "cluster heartbeat"),
                       self._spawner.spawn(self._read_inbox_forever(), "cluster inbox")]
        if self._bus is not None:
            self._tasks += [self._spawner.spawn(self._write_events_forever(), "cluster events out"),
                            self._spawner.spawn(self._read_events_forever(), "cluster events in")]

    async def close(self) -> None:
        self._closing = True
        await self.keeper.stop()
        await cancel_and_wait(self._tasks + ([self._sweeping] if self._sweeping is not None else []))
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        with contextlib.suppress(Exception):  # graceful: the others need not wait for the lease to lapse
            self._lease_until = 0.0
            await self._redis.delete(self._lease(self.node_id))
        await self._reader.aclose()
        await self._beat.aclose()
        await self._redis.aclose()

    # Directory ------------------------------------------------------------------------------------
    async def arrived(self, station_id: str) -> None:
        """A station connected here: it is ours (its latest connection wins over any older one)."""
        await self._redis.hset(self._owners, station_id, self.node_id)

    async def departed(self, station_id: str) -> bool:
        """A station's connection here ended: release it and mark its record disconnected, unless another
        node holds it by now (False). The mark is guarded as the sweep's is: a station that reconnected
        to another node right after the release was written connected there, and stays so."""
        if not await self._release(keys=[self._owners], args=[self.node_id, station_id]):
            return False
        await self._mark_disconnected([station_id])
        return True

    async def _live(self, nodes: Iterable[str]) -> set[str]:
        nodes = sorted(set(nodes))
        if not nodes:
            return set()
        values = await self._redis.mget([self._lease(n) for n in nodes])
        return {n for n, v in zip(nodes, values, strict=True) if v is not None}

    async def _all_owners(self) -> dict[str, str]:
        return {str(s): str(n) for s, n in (await self._redis.hgetall(self._owners)).items()}

    async def owner(self, station_id: str) -> str | None:
        """The node holding the station's websocket, if that node's lease lives."""
        return await self._owners_of.get(station_id)

    async def _fetch_owners(self, stations: list[str]) -> dict[str, str | None]:
        nodes = [None if n is None else str(n) for n in await self._redis.hmget(self._owners, stations)]
        live = await self._live(n for n in nodes if n is not None)
        return {s: n if n in live else None for s, n in zip(stations, nodes, strict=True)}

    async def live_owners(self) -> dict[str, str]:
        """Every station held by a node with a live lease: station -> node."""
        owners = await self._all_owners()
        live = await self._live(owners.values())
        return {s: n for s, n in owners.items() if n in live}

    async def sweep(self, also: str | None = None) -> list[str]:
        """Release the stations of nodes without a live lease (and of node ``also``); mark them disconnected."""
        owners = await self._all_owners()
        live = await self._live(owners.values()) - {also}
        by_node: dict[str, list[str]] = {}
        for station_id, node in owners.items():
            if node not in live:
                by_node.setdefault(node, []).append(station_id)
        released: list[str] = []
        for node, stations in by_node.items():
            if node == also:
                released += await self._release(keys=[self._owners], args=[node, *stations])
            else:
                released += await self._release_dead(keys=[self._owners, self._lease(node)], args=[node, *stations])
        await self._mark_disconnected(released)
        if released:
            self.on_release(await self._unheld(released))
            log.info("cluster: released %d station(s) of %s (no live lease)", len(released),
                     ", ".join(sorted(by_node)))
        return released

    async def _mark_disconnected(self, stations: list[str]) -> None:
        """Mark released stations disconnected in the store, :data:`OWNERS_PER_READ` per script, each only
        while no live node holds it (:data:`_MARK_UNHELD`)."""
        state = connection_fields(False, datetime.now(timezone.utc))
        fields = [self._lease(""), str(len(state) // 2), *state]
        for first in range(0, len(stations), OWNERS_PER_READ):
            chunk = stations[first:first + OWNERS_PER_READ]
            await self._mark_unheld(keys=[self._owners, *map(self._station_key, chunk)], args=[*fields, *chunk])

    async def _unheld(self, stations: list[str]) -> list[str]:
        """Those of ``stations`` no live node holds now. Marking thousands takes a while, and a station
        that reconnected to another node meanwhile was claimed there and announced as connected: it
        must not be announced gone after that (the grid leader would take it as gone for good)."""
        unheld: list[str] = []
        for first in range(0, len(stations), OWNERS_PER_READ):
            chunk = stations[first:first + OWNERS_PER_READ]
            owners = await self._fetch_owners(chunk)
            unheld += [s for s in chunk if owners[s] is None]
        return unheld

    async def _sweep_logged(self) -> None:
        try:
            await self.sweep()
        except Exception as exc:  # noqa: BLE001 - tried again next lease period
            self._errors.failed(log, "cluster sweep", exc, "dead nodes' stations not released")

    def _renewed(self, outcomes: list[Outcome]) -> None:
        """A round of the keeper's renewals ended (on the loop): log each lease's outage once, under
        its own label (the node lease's or the grid leader key's), and its end."""
        for where, failure in outcomes:
            if failure is not None:
                self._errors.failed(log, where, failure, "lease not renewed")
            elif self._errors.active:
                self._errors.succeeded(log, where)

    async def _heartbeat_forever(self) -> None:
        """Three times per lease: claim our stations back if the keeper found our lease lapsed; each
        lease period, sweep dead nodes' stations (the lease itself is renewed by the keeper)."""
        interval = self.lease_s / 3
        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.claim_if_due()
                if time.monotonic() - last_sweep >= self.lease_s and (self._sweeping is None or self._sweeping.done()):
                    last_sweep = time.monotonic()
                    # Not awaited: releasing a dead node's thousands of stations takes seconds.
                    self._sweeping = self._spawner.spawn(self._sweep_logged(), "cluster-sweep")
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a Redis outage
                self._errors.failed(log, "cluster claim", exc, "stations not claimed again yet")

    async def renew(self) -> None:
        """Renew the lease now, as the keeper does, and claim our stations if it had lapsed."""
        lapsed = await asyncio.to_thread(self._renew_lease, self.keeper.client)
        if lapsed is not None:
            self._lapsed(lapsed)
        await self.claim_if_due()

    def _lapsed(self, held_until: float) -> None:
        """Our lease was gone when we renewed it: a claim is due if stations are connected here. A node
        holding none (all its stations just left, as after a whole fleet disconnects) has nothing to
        claim; its lapse says only that its loop or Redis fell behind, so it is logged at info."""
        stations = len(list(self.local()))
        since = f"; last renewed {time.monotonic() - held_until + self.lease_s:.1f} s ago" if held_until else ""
        if not stations:
            log.info("cluster node %s: lease had lapsed (lease %g s%s); no stations connected here, none to claim",
                     self.node_id, self.lease_s, since)
            return
        log.warning("cluster node %s: lease had lapsed (lease %g s%s); claiming its %d station(s) again",
                    self.node_id, self.lease_s, since, stations)
        self._claim_due = True

    def _lapsed_then_claim(self, held_until: float) -> None:
        self._lapsed(held_until)
        if self._claim_due:
            self._spawner.spawn(self._claim_logged(), "cluster claim")

    async def _claim_logged(self) -> None:
        try:
            await self.claim_if_due()
        except Exception as exc:  # noqa: BLE001 - the heartbeat tries again
            self._errors.failed(log, "cluster claim", exc, "stations not claimed again yet")

    async def claim_if_due(self) -> None:
        """Claim our stations again if a lapse made it due (until a claim succeeded: one that failed
        is tried at the heartbeat's next round)."""
        if self._claim_due:
            self._claim_due = False  # before: a lapse the keeper finds meanwhile makes it due again
            try:
                await self._claim()
            except BaseException:
                self._claim_due = True
                raise

    async def _claim(self) -> None:
        """Our stations back in the directory, except those another live node took meanwhile (their
        sockets here are stale); announced as back only those a sweep released meanwhile: for the
        others nobody announced a departure, and announcing them would make the grid leader set every
        one up again."""
        stations = list(self.local())
        if not stations:
            return
        lost, back = await self._reclaim(keys=[self._owners], args=[self.node_id, self._lease(""), *stations])
        if lost:
            log.warning("cluster node %s: %d station(s) reconnected elsewhere meanwhile; closing their old sockets "
                        "here", self.node_id, len(lost))
            self.on_lost([str(s) for s in lost])
        if back:
            log.warning("cluster node %s: %d station(s) had been released meanwhile; announced as back",
                        self.node_id, len(back))
            self.on_reclaim([str(s) for s in back])

    # Forwarding -----------------------------------------------------------------------------------
    async def _post(self, node: str, message: Payload) -> None:
        await self._posts.get((node, next(self._post_seq), orjson.dumps(message)))

    async def _push_posts(self, posts: list[tuple[str, int, bytes]]) -> dict[tuple[str, int, bytes], None]:
        """The messages posted meanwhile, in order, each inbox's in one RPUSH (one transaction)."""
        by_node: dict[str, list[bytes]] = {}
        for node, _, raw in posts:
            by_node.setdefault(node, []).append(raw)
        async with self._redis.pipeline(transaction=True) as pipe:
            for node, raws in by_node.items():
                pipe.rpush(self._inbox(node), *raws)
                pipe.pexpire(self._inbox(node), INBOX_TTL_MS)
            await pipe.execute()
        return dict.fromkeys(posts)

    async def forward(self, node: str, request: Payload) -> Payload:
        """Run ``request`` (``station_id`` plus the command) on ``node`` and return the station's answer,
        raising what the command raised there; CallTimeout when no answer comes in time."""
        request_id = uuid.uuid4().hex
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._post(node, {"type": "request", "id": request_id, "reply_to": self.node_id,
                                    "deadline": time.time() + self.forward_timeout_s, "request": request})
            try:
                async with asyncio.timeout(self.forward_timeout_s):
                    outcome = await future
            except TimeoutError:
                raise CallTimeout(f"node {node!r}, which holds station {request.get('station_id')!r}, did not "
                                  f"answer within {self.forward_timeout_s:g} s") from None
        finally:
            self._pending.pop(request_id, None)
        return unwrap_outcome(str(request.get("station_id")), outcome)

    async def _read_inbox_forever(self) -> None:
        inbox = self._inbox(self.node_id)
        while True:
            try:
                item = await self._reader.blpop([inbox], timeout=1)
                # A burst (a grid leader's wave of pushes) is taken in one more round trip, not one each.
                more = await self._reader.lpop(inbox, INBOX_BATCH) if item is not None else None
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a Redis outage
                self._errors.failed(log, "cluster inbox", exc, "forwarded commands wait")
                await asyncio.sleep(1.0)
                continue
            if item is not None:
                self._take(str(item[1]))
            for raw in more or ():
                self._take(str(raw))

    def _take(self, raw: str) -> None:
        try:
            message = orjson.loads(raw)
            kind, request_id = message["type"], str(message["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("cluster inbox of %s: dropped a malformed message (%s): %.200s", self.node_id, exc, raw)
            return
        if kind == "reply":
            future = self._pending.get(request_id)
            if future is not None and not future.done():
                future.set_result(message.get("outcome"))
        elif kind == "request":
            self._spawner.spawn(self._run(message), f"forwarded-command {request_id}")
        else:
            log.warning("cluster inbox of %s: dropped a message of unknown type %r", self.node_id, kind)

    async def _run(self, message: Payload) -> None:
        """Run a command forwarded to us and post the outcome back (unless its sender gave up already)."""
        request, reply_to = message.get("request"), message.get("reply_to")
        deadline = message.get("deadline")
        if not isinstance(request, dict) or not isinstance(reply_to, str):
            log.warning("cluster: dropped a malformed forwarded command %r", message.get("id"))
            return
        if isinstance(deadline, (int, float)) and time.time() > deadline:
            log.warning("cluster: dropped forwarded command %s for %s: its sender stopped waiting",
                        message["id"], request.get("station_id"))
            return
        response: Payload | None = None
        error: BaseException | None = None
        try:
            if self.executor is None:
                raise ForwardFailed(f"node {self.node_id} runs no command executor")
            response = await self.executor(request)
        except Exception as exc:  # noqa: BLE001 - every outcome goes back to the sender
            error = exc
        await self._post(reply_to, {"type": "reply", "id": message["id"], "outcome": wrap_outcome(response, error)})

    # Shared events ------------------------------------------------------------------------------
    def _outgoing(self, ev: Event) -> None:
        if isinstance(ev, RemoteEvent):
            return
        if self._outbox.full():
            self._outbox.get_nowait()
            self.events_dropped += 1
        self._outbox.put_nowait(ev)

    async def _write_events_forever(self) -> None:
        """Our events to the shared stream in batches (one pipeline each); an outage loses them for the
        other nodes' live streams (logged), never anything stored."""
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty() and len(batch) < EVENTS_BATCH:
                batch.append(self._outbox.get_nowait())
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for first in range(0, len(batch), EVENTS_PER_ENTRY):
                        pipe.xadd(self._events,
                                  packed_fields(self.node_id, batch[first:first + EVENTS_PER_ENTRY]),  # type: ignore[arg-type]
                                  maxlen=EVENTS_MAXLEN, approximate=True)
                    await pipe.execute()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a Redis outage
                self.events_dropped += len(batch)
                self._errors.failed(log, "cluster events out", exc, f"{len(batch)} event(s) not shared")

    async def _read_events_forever(self) -> None:
        """The other nodes' events onto our bus, from the newest entry at start on (plain XREAD: every
        node reads every event, which a consumer group would share out instead)."""
        last: str | None = None
        while True:
            try:
                if last is None:
                    newest = await self._reader.xrevrange(self._events, count=1)
                    last = str(newest[0][0]) if newest else "0-0"
                answer: Any = await self._reader.xread({self._events: last}, count=ENTRIES_PER_READ, block=1000)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a Redis outage
                self._errors.failed(log, "cluster events in", exc, "other nodes' events not shown")
                await asyncio.sleep(1.0)
                continue
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    last = str(entry_id)
                    if fields.get("node") != self.node_id:
                        self._republish(fields)

    def _republish(self, fields: dict[str, str]) -> None:
        assert self._bus is not None
        try:
            events = unpacked(fields)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("cluster events: dropped a malformed entry (%s): %.200s", exc, fields)
            return
        for ev, grid in events:
            self._bus.publish(ev)
            feed = self.grid_feed
            if feed is not None and grid:
                try:
                    feed.remote(typed_event(grid))
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("cluster events: dropped a malformed grid event (%s): %.200s", exc, grid)

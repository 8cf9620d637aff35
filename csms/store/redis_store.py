"""Redis store: the same records as the SQLite store, shared by several daemon nodes.

Every write is one atomic server-side step (a single command or a Lua script). Writes are sent by
group commit: all those waiting when a batch goes share one non-transactional pipeline (ending with
``WAIT`` when ``wait_replicas`` is set), and a caller returns only after Redis (and its replicas)
acknowledged the batch holding its write. Per-pipeline client overhead, not Redis, was what limited
a node with thousands of stations writing at once (see ``RedisStore._write``). A
TransactionEvent is folded into its transaction by the shared merge rule in Python, from the
record as read; the script then checks (station, transactionId, seqNo) and the record's revision
and applies the result in one step: two nodes receiving the same retransmission can never both
store it, and an event merged from a record another node changed meanwhile is merged again.

Durability is the Redis server's: run it with ``appendonly yes`` (see docs/storage.md). Every hash
field holds a JSON value so types survive the round trip. Ids inside key names are escaped
(``%`` and ``:``) so no station id can reach into another station's keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT

from csms.domain.meter import REGISTERS, Sample
from csms.domain.records import BootInfo, IdTokenRecord, StationRecord, TransactionRecord
from csms.domain.transactions import Registers, TxEvent, TxState, epoch, merge
from csms.store.base import CommandOutcome, Store, check_limit
from csms.store.encoding import connector_ids, transaction_record
from csms.store.encoding import from_iso as _dt
from csms.store.encoding import iso as _iso
from csms.store.encoding import to_json as _json
from csms.store.redis_clients import async_client

log = logging.getLogger(__name__)

PAGE = 500  # members read per round trip when a filtered list query walks a sorted set
HASHES_PER_PIPELINE = 1000  # records read per round trip when a listing reads them whole
DOCUMENTS_PER_MGET = 1000  # documents read per MGET when a listing reads many


class ReplicationError(RedisError):
    """Fewer replicas than ``wait_replicas`` acknowledged a write in time: do not acknowledge it."""


# Group commit -----------------------------------------------------------------------------------
#: Commands in one batch at most (a single write with more goes alone): a batch is encoded, sent and
#: parsed as a whole, so an unbounded one would delay everyone in it and hold a huge buffer.
BATCH_COMMANDS = 2000
#: Batches in flight at once. One at a time would leave Redis idle while the next batch is built and
#: make a write queued just after a batch left wait for two round trips; a few overlap that work.
#: More gain nothing (Redis runs one command at a time) and bring back per-pipeline overhead.
BATCHES_IN_FLIGHT = 4

Queue = Callable[[Pipeline], Awaitable[None]]  # adds one caller's commands to a pipeline


class _Write:
    """One caller's ``queue`` and the future it awaits (its replies, or its error)."""

    __slots__ = ("queue", "done")

    def __init__(self, queue: Queue, done: asyncio.Future[list[Any]]) -> None:
        self.queue = queue
        self.done = done


_Slots = tuple[_Write, int, int]  # a write and its commands' positions [start, end) in the batch


def _fail(writes: Iterable[_Write], exc: BaseException) -> None:
    """Settle writes with ``exc``; a cancelled sender cancels them (none is left waiting for ever)."""
    for write in writes:
        if write.done.done():
            pass
        elif isinstance(exc, asyncio.CancelledError):
            write.done.cancel()
        else:
            write.done.set_exception(exc)


# Lua ------------------------------------------------------------------------------------------
# Samples get a member "<16 hex digits of a global counter><json>": unique even for identical
# samples, and equal timestamps keep their arrival order (sorted-set ties sort by member).
_ADD_SAMPLES = """
local function add_samples(counter, zkeys, first)
  local n = (#ARGV - first + 1) / 2
  if n < 1 then return end
  local id = redis.call('INCRBY', counter, n) - n
  for i = first, #ARGV, 2 do
    id = id + 1
    local member = string.format('%016x', id) .. ARGV[i + 1]
    for _, key in ipairs(zkeys) do redis.call('ZADD', key, ARGV[i], member) end
  end
end
"""

# The TransactionEvent: the new record is computed in Python by the shared merge rule
# (csms.domain.transactions.merge) from the record as read; this script only applies it, atomically,
# if the event is not stored yet and nobody changed the record since it was read ('rev').
# KEYS: events, tx hash, all-tx zset, station-tx zset, active set, station samples, tx samples, counter
# ARGV: seq, event member, rev read ('' = none), new rev, all-tx member, station-tx member, start score,
#       active ('1'/'0'), number of hash fields n, then n field/value pairs, then sample score/json pairs.
# Returns 1 (stored), 0 (already stored: a retransmission) or -1 (changed meanwhile: read again).
_TX_EVENT = _ADD_SAMPLES + """
local seq = tonumber(ARGV[1])
if redis.call('ZCOUNT', KEYS[1], seq, seq) > 0 then return 0 end
local rev = redis.call('HGET', KEYS[2], 'rev')
if (rev or '') ~= ARGV[3] then return -1 end
redis.call('ZADD', KEYS[1], seq, ARGV[2])
local n = tonumber(ARGV[9])
local fields = {'rev', ARGV[4]}
for i = 10, 9 + 2 * n do table.insert(fields, ARGV[i]) end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[6])
if ARGV[8] == '1' then redis.call('SADD', KEYS[5], ARGV[5]) else redis.call('SREM', KEYS[5], ARGV[5]) end
local first = 10 + 2 * n
local zkeys = {KEYS[6]}
if #ARGV >= first then table.insert(zkeys, KEYS[7]) end
add_samples(KEYS[8], zkeys, first)
return 1
"""
#: Attempts at a TransactionEvent whose record another node keeps changing meanwhile (each one
#: means another event of the same transaction got in first; within one node they take turns).
MAX_TX_ATTEMPTS = 20

# KEYS: counter, station samples.  ARGV: sample score/json pairs.
_METER_VALUES = _ADD_SAMPLES + """
add_samples(KEYS[1], {KEYS[2]}, 1)
return 1
"""

# KEYS: hash, index set.  ARGV: index member, replace ('1' deletes the old hash first),
# JSON {field: json value | null (delete)}, JSON {field: json value set only if absent}.
_UPSERT = """
if ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
for field, value in pairs(cjson.decode(ARGV[3])) do
  if value == cjson.null then redis.call('HDEL', KEYS[1], field) else redis.call('HSET', KEYS[1], field, value) end
end
for field, value in pairs(cjson.decode(ARGV[4])) do redis.call('HSETNX', KEYS[1], field, value) end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: hash, index set, further keys deleted with it.  ARGV: index member.  Returns 1 if the hash existed.
_DELETE = """
local existed = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
return existed
"""

# KEYS: hash.  ARGV: field/value pairs, written only if the hash exists (an UPDATE, never an insert).
_UPDATE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: lists.  ARGV[1]: the value pushed (newest first) onto every one of them.
# KEYS: any number.  ARGV: a read command and its arguments after the key.  Returns its reply for
# each key: one command for a thousand keys (a new grid leader's read-back), where a pipeline's
# client cost per command (reply parsing, a timeout each) was most of the read's time.
_EACH = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call(ARGV[1], key, unpack(ARGV, 2)) end
return out
"""

# KEYS: per transaction its hash and its samples.  Returns per transaction its samples (member,
# score, ...; in the sorted set's order) at the instants its hash's 'sample_bounds' names, or all its
# samples where that field is missing, unreadable or stale (its rev is not the record's).
_METER_BOUNDS = """
local out = {}
for i = 1, #KEYS, 2 do
  local got = redis.call('HMGET', KEYS[i], 'rev', 'sample_bounds')
  local ok, b = false, nil
  if got[1] and got[2] then ok, b = pcall(cjson.decode, got[2]) end
  if ok and type(b) == 'table' and b.rev == tonumber(got[1]) then
    local scores = {}
    if type(b.last) == 'table' then scores[#scores + 1] = b.last[2] end
    if type(b.registers) == 'table' then
      for _, ends in pairs(b.registers) do scores[#scores + 1] = ends[1]; scores[#scores + 1] = ends[2] end
    end
    table.sort(scores, function(x, y) return tonumber(x) < tonumber(y) end)
    local flat, prev = {}, nil
    for _, at in ipairs(scores) do
      if tonumber(at) ~= prev then
        prev = tonumber(at)
        for _, v in ipairs(redis.call('ZRANGEBYSCORE', KEYS[i + 1], at, at, 'WITHSCORES')) do flat[#flat + 1] = v end
      end
    end
    out[#out + 1] = flat
  else
    out[#out + 1] = redis.call('ZRANGE', KEYS[i + 1], 0, -1, 'WITHSCORES')
  end
end
return out
"""

_PUSH_ALL = """
for _, key in ipairs(KEYS) do redis.call('LPUSH', key, ARGV[1]) end
return 1
"""


# Values -----------------------------------------------------------------------------------------


def _opt(v: Any) -> str:
    """A JSON value for the Lua scripts; '' means absent (JSON never encodes to '')."""
    return "" if v is None else _json(v)



def _page(zkey: str, low: float | str, offset: int, num: int, pipe: Pipeline) -> None:
    """One page of a sorted set by score, from ``low`` on."""
    pipe.zrange(zkey, low, "+inf", byscore=True, offset=offset, num=num)


def _texts(values: Iterable[Any]) -> list[str]:
    """Members as text (the client decodes responses; its type hints cannot know that)."""
    return [v if isinstance(v, str) else bytes(v).decode() for v in values]


def _flat_sample(s: dict[str, Any]) -> dict[str, Any]:
    """A stored sample as :meth:`RedisStore.meter_samples` gives it."""
    return {k: s[k] for k in ("timestamp", "evse_id", "transaction_id", "measurand", "phase", "value", "unit",
                              "context")}


def _bounds(flat: list[str]) -> list[dict[str, Any]]:
    """:meth:`RedisStore.meter_bounds` of one transaction, from its members each followed by its
    score (the sample's instant as :func:`csms.domain.transactions.epoch` gave it, read back exactly)."""
    samples = [(orjson.loads(m[16:]), float(at)) for m, at in zip(flat[::2], flat[1::2])]
    if not samples:
        return []
    last = max(s["timestamp"] for s, _ in samples)
    ends: dict[str, tuple[float, float]] = {}
    for s, at in samples:
        if s["phase"] is None and s["measurand"] in REGISTERS:
            low, high = ends.get(s["measurand"], (at, at))
            ends[s["measurand"]] = (min(low, at), max(high, at))
    return [_flat_sample(s) for s, at in samples
            if s["timestamp"] == last or (s["phase"] is None and at in ends.get(s["measurand"], ()))]


def _scores(samples: Iterable[Any]) -> list[str]:
    """The samples' sorted-set scores: their instants, as text that reads back as the same float."""
    return [repr(epoch(s.timestamp, "meter value timestamp")) for s in samples]


def _fold_bounds(prior: dict[str, Any], samples: Sequence[Sample], scores: Sequence[str], rev: int
                 ) -> dict[str, Any]:
    """A transaction's ``sample_bounds`` (written with its record, at revision ``rev``) after
    ``samples``: the latest timestamp as text and its instant (``last``), and each energy
    register's (no phase) first and last instant (``registers``), instants as their scores.
    Order-free, as :meth:`RedisStore.meter_bounds` needs: the samples at those instants are the
    deciding ones whatever order the events came in."""
    last = prior.get("last")
    registers: dict[str, list[str]] = dict(prior.get("registers") or {})
    for s, score in zip(samples, scores):
        if last is None or s.timestamp > last[0]:
            last = [s.timestamp, score]
        if s.phase is None and s.measurand in REGISTERS:
            ends = registers.get(s.measurand)
            if ends is None:
                registers[s.measurand] = [score, score]
            else:
                at = float(score)
                registers[s.measurand] = [score if at < float(ends[0]) else ends[0],
                                          score if at > float(ends[1]) else ends[1]]
    out: dict[str, Any] = {"rev": rev}
    if last is not None:
        out["last"] = last
    if registers:
        out["registers"] = registers
    return out


def _decode(h: dict[str, str]) -> dict[str, Any]:
    return {k: orjson.loads(v) for k, v in h.items()}


def _redact(url: str) -> str:
    """The URL without its password, for error messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable url>"


def _part(s: str) -> str:
    """An id made safe for a key segment: no ':' (segment separator), '%' escaped to stay reversible."""
    return s.replace("%", "%25").replace(":", "%3A")


class _Keys:
    """The key layout (documented in docs/storage.md); every key starts with the prefix."""

    def __init__(self, prefix: str) -> None:
        self.p = prefix
        self.stations = f"{prefix}stations"
        self.tokens = f"{prefix}tokens"
        self.txs = f"{prefix}txs"
        self.active = f"{prefix}txs:active"
        self.security_events = f"{prefix}security_events"
        self.commands = f"{prefix}commands"
        self.sample_counter = f"{prefix}counter:samples"

    def station(self, sid: str, *rest: str) -> str:
        return ":".join((f"{self.p}station", _part(sid), *map(_part, rest)))

    def token(self, id_token: str) -> str:
        return f"{self.p}token:{_part(id_token)}"

    def tx(self, sid: str, tx_id: str, *rest: str) -> str:
        return ":".join((f"{self.p}tx", _part(sid), _part(tx_id), *rest))


#: A transaction hash's fields a listing reads: the record's and its filters' (not the writers'
#: bookkeeping: ``rev``, ``sample_bounds``, how its start was decided).
_TX_FIELDS = ("station_id", "transaction_id", "evse_id", "connector_id", "id_token", "started_at", "ended_at",
              "active", "charging_state", "stopped_reason", "last_seq_no", "energy_wh", "first_seen_as",
              "registers", "started_score")


def _tx_member(sid: str, tx_id: str) -> str:
    return _json([sid, tx_id])


def connection_fields(connected: bool, at: datetime) -> list[str]:
    """A station record's connection state as field/value pairs (also written by the cluster's sweep)."""
    return ["connected", _json(bool(connected)), "last_seen", _json(_iso(at))]


# The store --------------------------------------------------------------------------------------
class RedisStore(Store):
    def __init__(self, url: str, prefix: str = "netbewust:", *, wait_replicas: int = 0,
                 wait_timeout_ms: int = 1000, max_connections: int = 64) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url must start with redis://, rediss:// or unix://, got {_redact(str(url))!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("redis_prefix must be a non-empty string (it separates this system's keys)")
        if isinstance(wait_replicas, bool) or not isinstance(wait_replicas, int) or wait_replicas < 0:
            raise ValueError(f"wait_replicas must be an integer >= 0, got {wait_replicas!r}")
        if isinstance(wait_timeout_ms, bool) or not isinstance(wait_timeout_ms, int) or wait_timeout_ms <= 0:
            raise ValueError(f"wait_timeout_ms must be an integer > 0, got {wait_timeout_ms!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be an integer >= 1, got {max_connections!r}")
        self.url = url
        self.prefix = prefix
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.max_connections = max_connections
        self.keys = _Keys(prefix)
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._tx_locks: dict[tuple[str, str], list[Any]] = {}  # [lock, waiters] per transaction in progress
        self._pending: deque[_Write] = deque()  # writes waiting for the next batch
        self._senders: set[asyncio.Task[None]] = set()  # batches in flight (or about to be)
        self._starting: asyncio.Task[None] | None = None  # a sender that will take what is pending

    # Machinery --------------------------------------------------------------------------------
    async def open(self) -> None:
        # A blocking pool: under a burst, callers queue for a connection instead of failing.
        client = async_client(self.url, wait_s=30, max_connections=self.max_connections)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise ConnectionError(f"cannot reach Redis at {_redact(self.url)}: {exc}") from exc
        self._redis = client
        for name, source in (("tx_event", _TX_EVENT), ("meter_values", _METER_VALUES), ("upsert", _UPSERT),
                             ("delete", _DELETE), ("update_if_exists", _UPDATE_IF_EXISTS),
                             ("push_all", _PUSH_ALL), ("each", _EACH),
                             ("meter_bounds", _METER_BOUNDS)):
            self._scripts[name] = client.register_script(source)
        await self._load_scripts()
        await self._warn_without_persistence(client)

    async def _load_scripts(self) -> None:
        for script in self._scripts.values():
            script.sha = await self._r.script_load(script.script)

    async def _warn_without_persistence(self, client: aioredis.Redis) -> None:
        try:
            aof = (await client.config_get("appendonly")).get("appendonly")
        except RedisError:  # CONFIG may be disabled on managed Redis: nothing to check then
            return
        if aof != "yes":
            log.warning("Redis at %s runs without appendonly: acknowledged writes are lost when it restarts"
                        " (see docs/storage.md)", _redact(self.url))

    async def flush(self) -> None:
        """Nothing to wait for: every write returned after Redis acknowledged it."""

    async def close(self) -> None:
        if self._senders:  # writes already queued are sent (their callers are waiting for them)
            await asyncio.gather(*self._senders, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @property
    def _r(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("store is not open")
        return self._redis

    # Group commit ----------------------------------------------------------------------------
    async def _write(self, queue: Queue) -> list[Any]:
        """Send the queued writes; return their replies once Redis (and replicas) acknowledged them.

        ``queue`` adds this caller's commands to a pipeline, shared with every other write waiting
        when a batch is sent (at least all those queued within one event-loop turn): thousands of
        concurrent writers pay a few round trips instead of a pipeline each.
        """
        if self._redis is None:
            raise RuntimeError("store is not open")
        write = _Write(queue, asyncio.get_running_loop().create_future())
        self._pending.append(write)
        self._start_sender()
        return await write.done

    async def _read(self, command: Callable[[Pipeline], Any]) -> Any:
        """One read command's reply, sent in the next group-commit pipeline: a new grid leader's
        tens of thousands of reads at once (samples, needs, profiles per session) share round trips
        as writes do. Only for reads many callers make at once; a caller's own earlier write has
        returned before it reads, so it reads what it wrote."""
        async def queue(pipe: Pipeline) -> None:
            command(pipe)
        (reply,) = await self._write(queue)
        return reply

    def _start_sender(self) -> None:
        """A sender for what is pending, unless one is about to run anyway or enough are in flight."""
        if self._pending and self._starting is None and len(self._senders) < BATCHES_IN_FLIGHT:
            task = self._starting = asyncio.get_running_loop().create_task(self._send_batches())
            self._senders.add(task)
            task.add_done_callback(self._sender_done)

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        self._senders.discard(task)
        if self._starting is task:  # cancelled before it ran
            self._starting = None
        self._start_sender()

    async def _send_batches(self) -> None:
        while self._pending:
            if self._starting is asyncio.current_task():
                self._starting = None
            batch = await self._batch(self._pending, BATCH_COMMANDS)
            self._start_sender()  # the next batch may go while this one is in flight
            again = await self._send(*batch, retry_noscript=True)
            if again:
                # Redis restarted or failed over and forgot the scripts. NOSCRIPT means that script
                # did not run, and a write holding a script is all scripts or idempotent commands,
                # so those writes are sent once more (the others in the batch are settled already).
                try:
                    await self._load_scripts()
                except BaseException as exc:
                    _fail(again, exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                await self._send(*await self._batch(deque(again), None), retry_noscript=False)

    async def _batch(self, source: deque[_Write], limit: int | None) -> tuple[Pipeline, list[_Slots]]:
        """Take writes from ``source`` into one pipeline, up to ``limit`` commands (a write is never split)."""
        pipe = self._r.pipeline(transaction=False)
        batch: list[_Slots] = []
        while source and (limit is None or len(pipe.command_stack) < limit):
            write = source.popleft()
            if write.done.done():  # its caller was cancelled meanwhile
                continue
            start = len(pipe.command_stack)
            try:
                await write.queue(pipe)
            except Exception as exc:  # a bad argument: this caller's error alone
                del pipe.command_stack[start:]
                write.done.set_exception(exc)
                continue
            batch.append((write, start, len(pipe.command_stack)))
        return pipe, batch

    async def _send(self, pipe: Pipeline, batch: list[_Slots], *, retry_noscript: bool) -> list[_Write]:
        """One round trip for the batch; settle each caller with its own replies or its first error.

        An error of the round trip itself (Redis unreachable, too few replicas) fails every caller in
        it. Returns the writes that met NOSCRIPT, unsettled, when ``retry_noscript``.
        """
        if not batch:
            return []
        if self.wait_replicas:  # one WAIT per batch: it covers every write sent before it on this connection
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
        stack = pipe.command_stack  # execute() gives the pipeline a new, empty one
        again: list[_Write] = []
        try:
            replies = await pipe.execute(raise_on_error=False)
            if self.wait_replicas:
                acked = replies.pop()
                if isinstance(acked, Exception):
                    raise acked
                if acked < self.wait_replicas:
                    raise ReplicationError(f"only {acked} of {self.wait_replicas} Redis replicas acknowledged"
                                           f" within {self.wait_timeout_ms} ms")
        except BaseException as exc:
            _fail([w for w, _, _ in batch], exc)
            if not isinstance(exc, Exception):
                raise
            return []
        for write, start, end in batch:
            mine = replies[start:end]
            if retry_noscript and any(isinstance(r, NoScriptError) for r in mine):
                again.append(write)
            elif write.done.done():
                pass
            elif (error := next((i for i, r in enumerate(mine) if isinstance(r, Exception)), None)) is None:
                write.done.set_result(mine)
            else:  # numbered within the caller's own commands, as when each had its pipeline
                pipe.annotate_exception(mine[error], error + 1, stack[start + error][0])
                write.done.set_exception(mine[error])
        return again

    def _eval(self, pipe: Pipeline, name: str, keys: list[str], args: Iterable[Any]) -> None:
        """Queue one script by its SHA (loaded at open: no SCRIPT EXISTS round trip per write)."""
        pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)

    async def _call(self, name: str, keys: list[str], args: Iterable[Any]) -> Any:
        arg_list = list(args)

        async def queue(pipe: Pipeline) -> None:
            self._eval(pipe, name, keys, arg_list)
        return (await self._write(queue))[0]

    async def _hashes(self, keys: list[str]) -> list[dict[str, Any] | None]:
        """The hashes, read and decoded :data:`HASHES_PER_PIPELINE` at a time with the event loop
        let in between: one pipeline of 30,000 (a grid leader listing its running transactions)
        was parsed and decoded in one stretch, and the leader's loop stood still for seconds."""
        out: list[dict[str, Any] | None] = []
        for start in range(0, len(keys), HASHES_PER_PIPELINE):
            if start:
                await asyncio.sleep(0)
            pipe = self._r.pipeline(transaction=False)
            for k in keys[start:start + HASHES_PER_PIPELINE]:
                pipe.hgetall(k)
            out += [_decode(h) if h else None for h in await pipe.execute()]
        return out

    async def _tx_hashes(self, keys: list[str]) -> list[dict[str, Any] | None]:
        """Transaction records' fields (:data:`_TX_FIELDS` only), as :meth:`_hashes` reads hashes but
        one command per :data:`HASHES_PER_PIPELINE` (a new grid leader lists 30,000 running
        transactions, the leader's drift repair every 30 s: a command per record was most of it)."""
        out: list[dict[str, Any] | None] = []
        for start in range(0, len(keys), HASHES_PER_PIPELINE):
            if start:
                await asyncio.sleep(0)
            replies = await self._call("each", keys[start:start + HASHES_PER_PIPELINE], ["HMGET", *_TX_FIELDS])
            out += [{f: orjson.loads(v) for f, v in zip(_TX_FIELDS, values) if v is not None} or None
                    for values in replies]
        return out

    # Stations ---------------------------------------------------------------------------------
    @staticmethod
    def _station(h: dict[str, Any]) -> StationRecord:
        return StationRecord(
            station_id=h["station_id"], registration=h.get("registration", "Unknown"),
            registered=bool(h.get("registered", False)), vendor=h.get("vendor"), model=h.get("model"),
            serial_number=h.get("serial_number"), firmware_version=h.get("firmware_version"),
            boot_reason=h.get("boot_reason"), last_boot=_dt(h.get("last_boot")), last_seen=_dt(h.get("last_seen")),
            connected=bool(h.get("connected", False)), security_profile=h.get("security_profile", 0),
            password_hash=h.get("password_hash"), extra=h.get("extra", {}))

    async def get_station(self, station_id: str) -> StationRecord | None:
        h = (await self._hashes([self.keys.station(station_id)]))[0]
        return self._station(h) if h else None

    async def list_stations(self) -> list[StationRecord]:
        ids = sorted(_texts(await self._r.smembers(self.keys.stations)))
        hashes = await self._hashes([self.keys.station(s) for s in ids])
        return [self._station(h) for h in hashes if h]

    async def put_station(self, s: StationRecord) -> None:
        fields = {"station_id": s.station_id, "registration": s.registration, "registered": s.registered,
                  "vendor": s.vendor, "model": s.model, "serial_number": s.serial_number,
                  "firmware_version": s.firmware_version, "boot_reason": s.boot_reason,
                  "last_boot": _iso(s.last_boot), "last_seen": _iso(s.last_seen), "connected": s.connected,
                  "security_profile": s.security_profile, "password_hash": s.password_hash, "extra": s.extra}
        await self._call("upsert", [self.keys.station(s.station_id), self.keys.stations],
                         [s.station_id, "1", _json({k: _opt(v) or None for k, v in fields.items()}), "{}"])

    async def delete_station(self, station_id: str) -> bool:
        # Like the SQLite store: the station and its connectors go, its history (transactions,
        # meter samples, messages, commands) stays.
        existed = await self._call("delete", [self.keys.station(station_id), self.keys.stations,
                                              self.keys.station(station_id, "connectors")], [station_id])
        return bool(existed)

    async def record_boot(self, station_id: str, boot: BootInfo, registration: str, at: datetime) -> None:
        fields = {"station_id": station_id, "registration": registration, "vendor": boot.vendor,
                  "model": boot.model, "serial_number": boot.serial_number,
                  "firmware_version": boot.firmware_version, "boot_reason": boot.reason,
                  "last_boot": _iso(at), "last_seen": _iso(at), "connected": True}
        defaults = {"registered": False, "security_profile": 0, "extra": {}}
        await self._call("upsert", [self.keys.station(station_id), self.keys.stations],
                         [station_id, "0", _json({k: _opt(v) or None for k, v in fields.items()}),
                          _json({k: _json(v) for k, v in defaults.items()})])

    async def set_connection_state(self, station_id: str, connected: bool, at: datetime) -> None:
        await self._call("update_if_exists", [self.keys.station(station_id)], connection_fields(connected, at))

    async def touch_stations(self, last_seen: dict[str, datetime]) -> None:
        if not last_seen:
            return
        async def queue(pipe: Pipeline) -> None:
            for sid, t in last_seen.items():
                self._eval(pipe, "update_if_exists", [self.keys.station(sid)], ["last_seen", _json(_iso(t))])
        await self._write(queue)

    # Connectors -------------------------------------------------------------------------------
    async def set_connector_status(self, station_id: str, evse_id: int, connector_id: int, status: str,
                                   at: datetime) -> None:
        evse_id, connector_id = connector_ids(evse_id, connector_id)
        row = {"evse_id": evse_id, "connector_id": connector_id, "status": status, "updated_at": _iso(at)}
        key = self.keys.station(station_id, "connectors")

        async def queue(pipe: Pipeline) -> None:
            pipe.hset(key, _json([evse_id, connector_id]), _json(row))
        await self._write(queue)

    async def list_connectors(self, station_id: str) -> list[dict[str, Any]]:
        rows = [orjson.loads(v) for v in (await self._r.hgetall(self.keys.station(station_id, "connectors"))).values()]
        return sorted(rows, key=lambda r: (r["evse_id"], r["connector_id"]))

    # Id tokens --------------------------------------------------------------------------------
    @staticmethod
    def _token(h: dict[str, Any]) -> IdTokenRecord:
        return IdTokenRecord(h["id_token"], h["type"], h["status"], _dt(h.get("expiry")), h.get("group_id"))

    async def get_id_token(self, id_token: str) -> IdTokenRecord | None:
        h = (await self._hashes([self.keys.token(id_token)]))[0]
        return self._token(h) if h else None

    async def put_id_token(self, t: IdTokenRecord) -> None:
        fields = {"id_token": t.id_token, "type": t.type, "status": t.status, "expiry": _iso(t.expiry),
                  "group_id": t.group_id}
        await self._call("upsert", [self.keys.token(t.id_token), self.keys.tokens],
                         [t.id_token, "1", _json({k: _opt(v) or None for k, v in fields.items()}), "{}"])

    async def list_id_tokens(self) -> list[IdTokenRecord]:
        ids = sorted(_texts(await self._r.smembers(self.keys.tokens)))
        return [self._token(h) for h in await self._hashes([self.keys.token(i) for i in ids]) if h]

    async def delete_id_token(self, id_token: str) -> bool:
        return bool(await self._call("delete", [self.keys.token(id_token), self.keys.tokens], [id_token]))

    # Transactions -----------------------------------------------------------------------------
    @staticmethod
    def _sample_args(samples: Sequence[Any], received_at: str | None, scores: Sequence[str] | None = None
                     ) -> list[str]:
        """Score/member-JSON pairs of the samples (``scores``: their :func:`_scores`, if made already)."""
        args: list[str] = []
        for s, score in zip(samples, _scores(samples) if scores is None else scores):
            args += [score, _json({
                "timestamp": s.timestamp, "evse_id": s.evse_id, "transaction_id": s.transaction_id,
                "measurand": s.measurand, "phase": s.phase, "value": s.value, "unit": s.unit,
                "context": s.context, "location": s.location, "received_at": received_at})]
        return args

    async def record_transaction_event(self, station_id: str, event: TxEvent, received_at: datetime) -> bool:
        async with self._tx_turn(station_id, event.transaction_id):
            for _ in range(MAX_TX_ATTEMPTS):
                outcome = await self._apply_tx_event(station_id, event, received_at)
                if outcome >= 0:
                    return bool(outcome)
        raise RedisError(f"transaction {event.transaction_id!r} of {station_id} kept changing on other nodes;"
                         f" event seqNo {event.seq_no} not stored after {MAX_TX_ATTEMPTS} attempts")

    @contextlib.asynccontextmanager
    async def _tx_turn(self, station_id: str, transaction_id: str) -> AsyncIterator[None]:
        """Events of one transaction take turns within this node (no conflicts among themselves)."""
        key = (station_id, transaction_id)
        lock = self._tx_locks.get(key)
        if lock is None:
            lock = self._tx_locks[key] = [asyncio.Lock(), 0]
        lock[1] += 1
        try:
            async with lock[0]:
                yield
        finally:
            lock[1] -= 1
            if not lock[1]:
                del self._tx_locks[key]

    async def _apply_tx_event(self, station_id: str, ev: TxEvent, received_at: datetime) -> int:
        k = self.keys
        h = (await self._hashes([k.tx(station_id, ev.transaction_id)]))[0]
        rev = h.get("rev") if h else None  # None: no record yet (or one written before revisions)
        state = None if not h else TxState(
            started_at=h["started_at"], started_epoch=h["started_score"], last_seq_no=h["last_seq_no"],
            active=bool(h.get("active")), first_seen_as=h["first_seen_as"], evse_id=h.get("evse_id"),
            connector_id=h.get("connector_id"), id_token=h.get("id_token"), ended_at=h.get("ended_at"),
            charging_state=h.get("charging_state"), stopped_reason=h.get("stopped_reason"),
            energy_wh=h.get("energy_wh"), started_seq_no=h.get("started_seq_no"), started_by=h.get("started_by"),
            registers=Registers.from_record(h.get("registers")))
        tx = merge(state, ev)
        scores = _scores(ev.samples)
        prior = h.get("sample_bounds") if h else {}  # {}: a new record, no samples yet
        if not isinstance(prior, dict) or (h and (rev is None or prior.get("rev") != rev)):
            prior = None  # missing or stale (a node with older code wrote since): left so, read whole
        fields = {"station_id": station_id, "transaction_id": ev.transaction_id, "started_at": tx.started_at,
                  "started_score": tx.started_epoch, "last_seq_no": tx.last_seq_no, "first_seen_as": tx.first_seen_as,
                  "active": tx.active, "evse_id": tx.evse_id, "connector_id": tx.connector_id,
                  "id_token": tx.id_token, "ended_at": tx.ended_at, "charging_state": tx.charging_state,
                  "stopped_reason": tx.stopped_reason, "energy_wh": tx.energy_wh,
                  "started_seq_no": tx.started_seq_no, "started_by": tx.started_by,
                  "registers": tx.registers.record() or None,
                  "sample_bounds": None if prior is None else _fold_bounds(prior, ev.samples, scores, (rev or 0) + 1)}
        present = [(name, _json(value)) for name, value in fields.items() if value is not None]
        received = _iso(received_at)
        keys = [k.tx(station_id, ev.transaction_id, "events"), k.tx(station_id, ev.transaction_id), k.txs,
                k.station(station_id, "txs"), k.active, k.station(station_id, "samples"),
                k.tx(station_id, ev.transaction_id, "samples"), k.sample_counter]
        args = [str(ev.seq_no), _json({**ev.payload, "receivedAt": received}), "" if rev is None else str(rev),
                str((rev or 0) + 1), _tx_member(station_id, ev.transaction_id), ev.transaction_id,
                repr(tx.started_epoch), "1" if tx.active else "0", str(len(present)),
                *(item for pair in present for item in pair), *self._sample_args(ev.samples, received, scores)]
        return int(await self._call("tx_event", keys, args))

    async def record_meter_values(self, station_id: str, samples: Sequence[Sample], received_at: datetime) -> None:
        args = self._sample_args(samples, _iso(received_at))
        if args:
            await self._call("meter_values", [self.keys.sample_counter, self.keys.station(station_id, "samples")],
                             args)

    @staticmethod
    def _tx(h: dict[str, Any]) -> TransactionRecord:
        return transaction_record(h, Registers.from_record(h.get("registers")))  # absent in an old record: none

    async def get_transaction(self, station_id: str, transaction_id: str) -> TransactionRecord | None:
        h = (await self._hashes([self.keys.tx(station_id, transaction_id)]))[0]
        return self._tx(h) if h else None

    async def list_transactions(self, *, station_id: str | None = None, active: bool | None = None,
                                since: datetime | None = None, until: datetime | None = None,
                                limit: int = 1000) -> list[TransactionRecord]:
        check_limit(limit)
        since_s = None if since is None else since.timestamp()
        until_s = None if until is None else until.timestamp()

        def wanted(h: dict[str, Any]) -> bool:
            if station_id is not None and h["station_id"] != station_id:
                return False
            if active is not None and bool(h.get("active")) != active:
                return False
            if since_s is not None and h.get("ended_at") is not None and epoch(h["ended_at"], "ended_at") < since_s:
                return False
            return until_s is None or h["started_score"] <= until_s

        if limit == 0:
            return []
        if active:  # the active set is small (one entry per busy EVSE): read it whole
            pairs = [orjson.loads(m) for m in _texts(await self._r.smembers(self.keys.active))]
            hashes = await self._tx_hashes([self.keys.tx(s, t) for s, t in pairs if station_id in (None, s)])
            found = sorted((h for h in hashes if h and wanted(h)), key=lambda h: h["started_score"], reverse=True)
            return [self._tx(h) for h in found[:limit]]
        # Newest start first, walking the sorted set in pages until ``limit`` records passed the filters.
        zkey = self.keys.txs if station_id is None else self.keys.station(station_id, "txs")
        out: list[TransactionRecord] = []
        offset, page = 0, max(min(limit, PAGE), 1)
        while len(out) < limit:
            top = "+inf" if until_s is None else until_s
            members = _texts(await self._r.zrange(zkey, top, "-inf", desc=True, byscore=True, offset=offset,
                                                  num=page))
            if not members:
                break
            offset += len(members)
            if station_id is None:
                keys = [self.keys.tx(*orjson.loads(m)) for m in members]
            else:
                keys = [self.keys.tx(station_id, m) for m in members]
            out += [self._tx(h) for h in await self._tx_hashes(keys) if h and wanted(h)]
        return out[:limit]

    async def transaction_events(self, station_id: str, transaction_id: str) -> list[dict[str, Any]]:
        events = await self._r.zrange(self.keys.tx(station_id, transaction_id, "events"), 0, -1)
        return [orjson.loads(m) for m in _texts(events)]

    async def meter_samples(self, station_id: str, *, transaction_id: str | None = None,
                            evse_id: int | None = None, since: datetime | None = None,
                            limit: int = 100000) -> list[dict[str, Any]]:
        check_limit(limit)
        if transaction_id is not None:
            zkey = self.keys.tx(station_id, transaction_id, "samples")
        else:
            zkey = self.keys.station(station_id, "samples")
        low = "-inf" if since is None else since.timestamp()
        out: list[dict[str, Any]] = []
        offset, page = 0, max(min(limit, PAGE * 10), 1)
        while len(out) < limit:
            members = _texts(await self._read(functools.partial(_page, zkey, low, offset, page)))
            if not members:
                break
            offset += len(members)
            for m in members:
                s = orjson.loads(m[16:])
                if evse_id is None or s["evse_id"] == evse_id:
                    out.append(_flat_sample(s))
            if len(members) < page:  # the last page: no round trip to find the next one empty (a new
                break  # grid leader reads 30,000 transactions' samples at once)
        return out[:limit]

    async def meter_bounds(self, transactions: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """One command for all: each transaction's samples at the few instants its record's
        ``sample_bounds`` name (all its samples where those are missing or stale), the deciding
        ones picked here, as from all: the read no longer grows with the transaction's history."""
        keys = [key for sid, tx_id in transactions
                for key in (self.keys.tx(sid, tx_id), self.keys.tx(sid, tx_id, "samples"))]
        replies = await self._call("meter_bounds", keys, []) if keys else []
        return {t: _bounds(flat) for t, flat in zip(transactions, replies)}

    # Smart charging ---------------------------------------------------------------------------
    async def record_ev_charging_needs(self, station_id: str, evse_id: int, payload: dict[str, Any],
                                       at: datetime) -> None:
        key = self.keys.station(station_id, "ev_needs", str(evse_id))
        value = _json({"payload": payload, "received_at": _iso(at)})

        async def queue(pipe: Pipeline) -> None:
            pipe.lpush(key, value)
        await self._write(queue)

    async def latest_ev_charging_needs(self, station_id: str, evse_id: int) -> dict[str, Any] | None:
        key = self.keys.station(station_id, "ev_needs", str(evse_id))
        newest = await self._read(lambda pipe: pipe.lindex(key, 0))
        return None if newest is None else orjson.loads(newest)["payload"]

    async def latest_ev_charging_needs_many(self, evses: Sequence[tuple[str, int]]
                                            ) -> dict[tuple[str, int], dict[str, Any] | None]:
        keys = [self.keys.station(sid, "ev_needs", str(evse_id)) for sid, evse_id in evses]
        replies = await self._call("each", keys, ["LINDEX", 0]) if keys else []
        return {e: None if v is None else orjson.loads(v)["payload"] for e, v in zip(evses, replies)}

    async def record_charging_profile(self, station_id: str, evse_id: int, profile: dict[str, Any],
                                      status: str, status_info: dict[str, Any] | None, at: datetime) -> None:
        row = {"station_id": station_id, "evse_id": evse_id, "profile_id": profile.get("id"),
               "purpose": profile.get("chargingProfilePurpose"), "stack_level": profile.get("stackLevel"),
               "transaction_id": profile.get("transactionId"), "profile": profile, "status": status,
               "status_info": status_info or None, "sent_at": _iso(at)}
        key, value = self.keys.station(station_id, "charging_profiles"), _json(row)

        async def queue(pipe: Pipeline) -> None:
            pipe.rpush(key, value)
        await self._write(queue)

    async def list_charging_profiles(self, station_id: str, newest: int | None = None) -> list[dict[str, Any]]:
        key = self.keys.station(station_id, "charging_profiles")
        if newest is not None and check_limit(newest) == 0:
            return []
        first = 0 if newest is None else -newest
        return [orjson.loads(v) for v in await self._read(lambda pipe: pipe.lrange(key, first, -1))]

    async def list_charging_profiles_many(self, station_ids: Sequence[str], newest: int
                                          ) -> dict[str, list[dict[str, Any]]]:
        if check_limit(newest) == 0 or not station_ids:
            return {sid: [] for sid in station_ids}
        keys = [self.keys.station(sid, "charging_profiles") for sid in station_ids]
        replies = await self._call("each", keys, ["LRANGE", -newest, -1])
        return {sid: [orjson.loads(v) for v in values] for sid, values in zip(station_ids, replies)}

    # Device model, events, commands -----------------------------------------------------------
    async def record_variables(self, station_id: str, variables: list[dict[str, Any]], at: datetime) -> None:
        mapping: dict[EncodableT, EncodableT] = {}
        for v in variables:
            comp, var = v.get("component", {}), v.get("variable", {})
            evse = comp.get("evse") or {}
            row = {"component": comp.get("name"), "component_instance": comp.get("instance", ""),
                   "evse_id": evse.get("id", -1), "connector_id": evse.get("connectorId", -1),
                   "variable": var.get("name"), "variable_instance": var.get("instance", ""),
                   "attribute_type": v.get("attributeType", "Actual"),
                   "value": None if v.get("value") is None else str(v["value"]), "updated_at": _iso(at)}
            identity = [row[k] for k in ("component", "component_instance", "evse_id", "connector_id", "variable",
                                         "variable_instance", "attribute_type")]
            mapping[_json(identity)] = _json(row)
        if not mapping:
            return
        key = self.keys.station(station_id, "variables")

        async def queue(pipe: Pipeline) -> None:
            pipe.hset(key, mapping=mapping)
        await self._write(queue)

    async def list_variables(self, station_id: str) -> list[dict[str, Any]]:
        rows = [orjson.loads(v) for v in (await self._r.hgetall(self.keys.station(station_id, "variables"))).values()]

        def order(r: dict[str, Any]) -> tuple[Any, ...]:
            return tuple((r[k] is not None, r[k] if r[k] is not None else "")
                         for k in ("component", "variable", "component_instance", "evse_id", "connector_id",
                                   "variable_instance", "attribute_type"))
        return sorted(rows, key=order)

    async def record_security_event(self, station_id: str, type_: str, timestamp: str, tech_info: str | None,
                                    at: datetime) -> None:
        row = {"station_id": station_id, "type": type_, "timestamp": timestamp, "tech_info": tech_info,
               "received_at": _iso(at)}
        await self._call("push_all", [self.keys.security_events, self.keys.station(station_id, "security_events")],
                         [_json(row)])

    async def list_security_events(self, station_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        key = self.keys.security_events if station_id is None else self.keys.station(station_id, "security_events")
        return await self._newest(key, limit)

    async def _newest(self, key: str, limit: int) -> list[dict[str, Any]]:
        if check_limit(limit) == 0:
            return []
        return [orjson.loads(v) for v in await self._r.lrange(key, 0, limit - 1)]

    async def record_station_message(self, station_id: str, action: str, payload: dict[str, Any],
                                     at: datetime) -> None:
        row = {"station_id": station_id, "action": action, "payload": payload, "received_at": _iso(at)}
        await self._call("push_all", [self.keys.station(station_id, "messages"),
                                      self.keys.station(station_id, "messages", action)], [_json(row)])

    async def list_station_messages(self, station_id: str, action: str | None = None,
                                    limit: int = 1000) -> list[dict[str, Any]]:
        parts = ("messages",) if action is None else ("messages", action)
        return await self._newest(self.keys.station(station_id, *parts), limit)

    async def record_command(self, station_id: str, action: str, request: dict[str, Any], outcome: CommandOutcome,
                             response: dict[str, Any] | None, sent_at: datetime, finished_at: datetime) -> None:
        row = {"station_id": station_id, "action": action, "request": request, "outcome": outcome,
               "response": response, "sent_at": _iso(sent_at), "finished_at": _iso(finished_at)}
        await self._call("push_all", [self.keys.commands, self.keys.station(station_id, "commands")], [_json(row)])

    async def list_commands(self, station_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        key = self.keys.commands if station_id is None else self.keys.station(station_id, "commands")
        return await self._newest(key, limit)

    # Documents and counters -------------------------------------------------------------------
    def _doc(self, scope: str, key: str) -> str:
        return f"{self.keys.p}doc:{_part(scope)}:{_part(key)}"

    def _doc_index(self, scope: str) -> str:
        return f"{self.keys.p}docs:{_part(scope)}"

    async def get_document(self, scope: str, key: str) -> dict[str, Any] | None:
        raw = await self._r.get(self._doc(scope, key))
        return dict(orjson.loads(raw)) if raw is not None else None

    async def put_document(self, scope: str, key: str, document: dict[str, Any]) -> None:
        encoded = _json(document)

        async def queue(pipe: Pipeline) -> None:
            pipe.set(self._doc(scope, key), encoded)
            pipe.zadd(self._doc_index(scope), {key: 0})
        await self._write(queue)

    async def delete_document(self, scope: str, key: str) -> bool:
        async def queue(pipe: Pipeline) -> None:
            pipe.delete(self._doc(scope, key))
            pipe.zrem(self._doc_index(scope), key)
        return bool((await self._write(queue))[0])

    async def list_documents(self, scope: str, limit: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        if check_limit(limit) == 0:
            return []
        found = await self._r.zrange(self._doc_index(scope), 0, limit - 1)  # equal scores: in key order
        keys = [str(k) for k in found]
        if not keys:
            return []
        out: list[tuple[str, dict[str, Any]]] = []
        for start in range(0, len(keys), DOCUMENTS_PER_MGET):  # one huge reply would block Redis and us
            if start:
                await asyncio.sleep(0)
            chunk = keys[start:start + DOCUMENTS_PER_MGET]
            values = await self._r.mget([self._doc(scope, k) for k in chunk])
            out += [(k, dict(orjson.loads(v))) for k, v in zip(chunk, values) if v is not None]
        return out

    async def next_number(self, name: str) -> int:
        async def queue(pipe: Pipeline) -> None:
            pipe.incr(f"{self.keys.p}counter:{_part(name)}")
        return int((await self._write(queue))[0])

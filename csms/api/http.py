"""Shared plumbing of the API routes: errors, JSON in and out, route registration with scopes.

Request bodies are validated against the same JSON schemas the OpenAPI document publishes
(``csms.api.schemas``), so the document and the behaviour cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import fastjsonschema
import orjson
from aiohttp import web

from csms.api.auth import READ
from csms.api.schemas import BODIES
from csms.errorlog import ErrorLog
from csms.interfaces import Bus, Commands, ConnectionRegistry, GridService, NotificationReceiver, StationDirectory
from csms.metrics import Metrics
from csms.protocol.version import ProtocolVersion
from csms.store.base import Store

if TYPE_CHECKING:
    from csms.billing import Billing
    from csms.operations import Operations


@dataclasses.dataclass(frozen=True)
class ApiContext:
    """What the routes may use: the composition root hands it over, nothing else is reachable."""

    store: Store
    connections: ConnectionRegistry
    bus: Bus
    commands: Commands
    metrics: Metrics
    station_trace: Callable[[str], list[tuple[str, str, str]]]
    readiness: Callable[[], dict[str, bool]]  # named checks, all True when the daemon serves stations
    version: ProtocolVersion  # what the generic command path offers (the default OCPP version)
    grid: GridService | None = None
    operations: Operations | None = None  # the typed 2.0.1 operations with kept state (issue 17)
    billing: Billing | None = None  # tariffs and session costs
    listeners: Callable[[], list[dict[str, object]]] | None = None  # where stations connect (scheme, port)
    errors: ErrorLog = dataclasses.field(default_factory=ErrorLog)  # one traceback per incident and class, then counts
    # Every version the daemon speaks, by subprotocol: the generic command path checks a station's own.
    versions: Mapping[str, ProtocolVersion] = dataclasses.field(default_factory=dict)
    openadr: NotificationReceiver | None = None  # the OpenADR VEN's webhook (grid.openadr.webhook_url)
    cluster: StationDirectory | None = None  # several nodes: stations held by the others, commands forwarded
    # Several nodes with grid control: None while this node runs the grid part, else the leading node's
    # API address (the grid's routes forward there); csms.cluster_grid.NotLeading while no node runs it.
    grid_leader: Callable[[], Awaitable[str | None]] | None = None


CONTEXT: web.AppKey[ApiContext] = web.AppKey("context", ApiContext)
# Who made the request (the token's name), for the log lines of changes.
PRINCIPAL: Any = web.RequestKey("principal", str) if hasattr(web, "RequestKey") else "principal"


def principal_of(request: web.Request) -> str | None:
    return request.get(PRINCIPAL)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An answer other than success: HTTP status, a precise message, optional detail fields."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    scope: str
    body: str | None = None  # name of the request body schema in csms.api.schemas.BODIES


class Routes:
    """Collects a module's routes with the scope each needs."""

    def __init__(self) -> None:
        self.items: list[Route] = []

    def add(self, method: str, path: str, scope: str = READ, body: str | None = None) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.items.append(Route(method, path, fn, scope, body))
            return fn
        return register

    def get(self, path: str, scope: str = READ) -> Callable[[Handler], Handler]:
        return self.add("GET", path, scope)

    def post(self, path: str, scope: str, body: str | None = None) -> Callable[[Handler], Handler]:
        return self.add("POST", path, scope, body)

    def delete(self, path: str, scope: str) -> Callable[[Handler], Handler]:
        return self.add("DELETE", path, scope)


def context_of(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=_default, option=orjson.OPT_NON_STR_KEYS)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json")


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()


@lru_cache(maxsize=None)
def _validator(name: str) -> Callable[[Any], Any]:
    return fastjsonschema.compile(BODIES[name])


async def read_body(request: web.Request, schema: str) -> dict[str, Any]:
    """The JSON body, validated; 400 for broken JSON, 422 naming the offending field."""
    raw = await request.read()
    if not raw:
        data: Any = {}
    else:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    try:
        _validator(schema)(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        field = (exc.name or "data").removeprefix("data").lstrip(".")
        if exc.rule == "required" and isinstance(exc.value, dict) and isinstance(exc.rule_definition, list):
            missing = [k for k in exc.rule_definition if k not in exc.value]
            if missing:  # name the missing field itself, not its parent
                field = f"{field}.{missing[0]}" if field else missing[0]
        field = field or "<body>"
        message = (exc.message or "invalid").replace("data.", "", 1).replace("data ", "body ", 1)
        raise ApiError(422, f"invalid request body: {message}", field=field) from None
    body: dict[str, Any] = as_integers(BODIES[schema], data)  # every body schema is an object
    return body


def as_integers(schema: Any, data: Any) -> Any:
    """JSON Schema counts 1.0 as an integer; the code behind it wants an int (an id formatted
    with ``:d``, a count), so integral floats where the schema says integer become ints."""
    if not isinstance(schema, dict):
        return data
    if isinstance(data, float) and schema.get("type") == "integer":
        return int(data)
    if isinstance(data, dict):
        props = schema.get("properties") or {}
        return {k: as_integers(props.get(k), v) for k, v in data.items()}
    if isinstance(data, list):
        return [as_integers(schema.get("items"), v) for v in data]
    return data


def query_int(request: web.Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name!r} must be an integer, got {raw!r}", field=name) from None
    if not lo <= value <= hi:
        raise ApiError(400, f"query parameter {name!r} must be between {lo} and {hi}, got {value}", field=name)
    return value


def query_bool(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ApiError(400, f"query parameter {name!r} must be true or false, got {raw!r}", field=name)


def query_time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"query parameter {name!r} must be an ISO 8601 time, got {raw!r}", field=name) from None
    if dt.tzinfo is None:
        raise ApiError(400, f"query parameter {name!r} needs a time zone (e.g. 'Z' or '+01:00'), got {raw!r}",
                       field=name)
    return dt

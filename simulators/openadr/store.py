"""The VTN's objects and the read rules of the spec: query filters, pagination, targeting, privacy.

No I/O here: the HTTP layer (`vtn.py`) asks who may see what and stores what it is given.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

KINDS = ("program", "event", "report", "subscription", "ven", "resource")
OBJECT_TYPE = {kind: kind.upper() for kind in KINDS}
MAX_LIMIT = 50  # the spec's maximum for the `limit` query parameter
_DURATION = re.compile(r"^(-?)P(?=\d|T\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)([DW]))?"
                       r"(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


class QueryError(ValueError):
    """A query parameter the spec does not allow (answered with 400)."""


def parse_duration(text: str) -> timedelta:
    """ISO 8601 duration as the spec's pattern allows; years and months count as 365 and 30 days."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    sign, years, months, days, unit, hours, minutes, seconds = match.groups()
    day_count = int(days or 0) * (7 if unit == "W" else 1) + int(years or 0) * 365 + int(months or 0) * 30
    span = timedelta(days=day_count, hours=int(hours or 0), minutes=int(minutes or 0), seconds=float(seconds or 0))
    return -span if sign else span


def parse_datetime(text: str) -> datetime:
    at = datetime.fromisoformat(text)  # 3.11 reads a trailing Z
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_end(event: dict[str, Any]) -> datetime | None:
    """When the last interval ends; None when open-ended (duration PT0S) or not computable."""
    default = event.get("intervalPeriod") or {}
    cursor: datetime | None = None
    end: datetime | None = None
    try:
        for interval in event.get("intervals") or []:
            period = interval.get("intervalPeriod") or {}
            start_text = period.get("start")
            start = parse_datetime(start_text) if start_text else cursor or parse_datetime(default["start"])
            span = parse_duration(period.get("duration") or default.get("duration") or "PT0S")
            if span <= timedelta(0):
                return None
            cursor = start + span
            end = cursor if end is None else max(end, cursor)
    except (KeyError, ValueError, TypeError):
        return None
    return end


@dataclass(frozen=True)
class Caller:
    """Who is asking: the OAuth client behind the bearer token."""

    client_id: str
    role: str  # "ven" or "bl"


@dataclass
class Query:
    skip: int = 0
    limit: int = MAX_LIMIT
    program_id: str | None = None
    event_id: str | None = None
    client_name: str | None = None
    ven_name: str | None = None
    resource_name: str | None = None
    ven_id: str | None = None
    target_type: str | None = None  # 3.0.1
    target_values: list[str] = field(default_factory=list)  # 3.0.1 targetValues, 3.1.0 targets
    objects: list[str] = field(default_factory=list)
    active: bool | None = None


def _int_param(params: Any, name: str, default: int, maximum: int | None = None) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0 or (maximum is not None and value > maximum):
        raise QueryError(f"{name} must be between 0 and {maximum if maximum is not None else 'any'}, got {value}")
    return value


def parse_query(params: Any, version: str) -> Query:
    """Read the list-endpoint query parameters (`params` is a multidict: repeated keys allowed)."""
    query = Query(skip=_int_param(params, "skip", 0), limit=_int_param(params, "limit", MAX_LIMIT, MAX_LIMIT),
                  program_id=params.get("programID"), event_id=params.get("eventID"),
                  client_name=params.get("clientName"), ven_name=params.get("venName"),
                  resource_name=params.get("resourceName"), ven_id=params.get("venID"),
                  objects=params.getall("objects", []))
    if version == "3.0.1":
        query.target_type = params.get("targetType")
        query.target_values = params.getall("targetValues", [])
    else:
        query.target_values = params.getall("targets", [])
    active = params.get("active")
    if active is not None:
        if active not in ("true", "false"):
            raise QueryError(f"active must be true or false, got {active!r}")
        query.active = active == "true"
    return query


def target_values(targets: Iterable[Any] | None, target_type: str | None = None) -> set[str]:
    """The target terms of an object: 3.1.0 strings, or the values of 3.0.1 valuesMaps (of one type)."""
    terms: set[str] = set()
    for target in targets or ():
        if isinstance(target, str):
            terms.add(target)
        elif isinstance(target, dict) and (target_type is None or target.get("type") == target_type):
            terms.update(str(v) for v in target.get("values") or ())
    return terms


def _has_target_type(targets: Iterable[Any] | None, target_type: str) -> bool:
    return any(isinstance(t, dict) and t.get("type") == target_type for t in targets or ())


@dataclass
class Store:
    """All objects by kind, in creation order, with who created each."""

    version: str
    clock: Callable[[], datetime]
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {k: {} for k in KINDS})
    owner: dict[str, Caller] = field(default_factory=dict)

    def new_id(self, kind: str) -> str:
        return f"{kind}-{uuid.uuid4().hex[:12]}"

    def get(self, kind: str, object_id: str) -> dict[str, Any] | None:
        return self.objects[kind].get(object_id)

    def put(self, kind: str, body: dict[str, Any], caller: Caller, object_id: str | None = None) -> dict[str, Any]:
        """Create (no id) or replace an object, writing the VTN-provisioned metadata."""
        now = iso(self.clock())
        old = self.objects[kind].get(object_id) if object_id else None
        stored = dict(body)
        stored["id"] = object_id or self.new_id(kind)
        stored["createdDateTime"] = old["createdDateTime"] if old else now
        stored["modificationDateTime"] = now
        stored["objectType"] = OBJECT_TYPE[kind]
        self.objects[kind][stored["id"]] = stored
        if old is None:
            self.owner[stored["id"]] = caller
        return stored

    def delete(self, kind: str, object_id: str) -> dict[str, Any] | None:
        self.owner.pop(object_id, None)
        return self.objects[kind].pop(object_id, None)

    def ven_of(self, client_id: str) -> dict[str, Any] | None:
        """The ven object a client is bound to (3.1.0 clientID; 3.0.1: the ven it created)."""
        for ven in self.objects["ven"].values():
            if ven.get("clientID") == client_id or (self.version == "3.0.1" and self.owner.get(ven["id"]) ==
                                                    Caller(client_id, "ven")):
                return ven
        return None

    def granted_targets(self, client_id: str) -> set[str]:
        """3.1.0 targeting: the targets BL wrote into the client's ven and its resources."""
        ven = self.ven_of(client_id)
        if ven is None:
            return set()
        granted = target_values(ven.get("targets"))
        for resource in self.objects["resource"].values():
            if resource.get("venID") == ven["id"]:
                granted |= target_values(resource.get("targets"))
        return granted

    def program_of(self, kind: str, obj: dict[str, Any]) -> str | None:
        if kind == "program":
            return obj.get("id")
        if kind == "event":
            return obj.get("programID")
        if kind == "report":
            event = self.objects["event"].get(obj.get("eventID") or "")
            return obj.get("programID") or (event or {}).get("programID")
        return None

    # ---- reads -------------------------------------------------------------------------------

    def visible(self, kind: str, obj: dict[str, Any], caller: Caller, requested: set[str] | None = None) -> bool:
        """May `caller` read `obj`? 3.0.1: every role has read_all. 3.1.0: object privacy for VENs."""
        if self.version == "3.0.1" or caller.role == "bl":
            return True
        if kind in ("program", "event"):
            targets = target_values(obj.get("targets"))
            if not targets:
                return True
            allowed = self.granted_targets(caller.client_id)
            if requested is not None:
                allowed &= requested
            return bool(targets & allowed)
        if kind == "resource":
            ven = self.ven_of(caller.client_id)
            return obj.get("clientID") == caller.client_id or (ven is not None and obj.get("venID") == ven["id"])
        return obj.get("clientID") == caller.client_id

    def present(self, kind: str, obj: dict[str, Any], caller: Caller, requested: set[str] | None = None) -> dict[str, Any]:
        """3.1.0 target hiding: a VEN sees only the program/event targets it asked for and was granted."""
        if self.version == "3.0.1" or caller.role == "bl" or kind not in ("program", "event") or not obj.get("targets"):
            return obj
        allowed = self.granted_targets(caller.client_id)
        if requested is not None:
            allowed &= requested
        return {**obj, "targets": [t for t in obj["targets"] if t in allowed]}

    def _matches(self, kind: str, obj: dict[str, Any], query: Query) -> bool:
        checks = [
            (query.program_id, lambda: self.program_of(kind, obj) == query.program_id),
            (query.event_id, lambda: obj.get("eventID") == query.event_id),
            (query.client_name, lambda: obj.get("clientName") == query.client_name),
            (query.ven_name, lambda: obj.get("venName") == query.ven_name),
            (query.resource_name, lambda: obj.get("resourceName") == query.resource_name),
            (query.ven_id, lambda: obj.get("venID") == query.ven_id),
        ]
        if not all(check() for wanted, check in checks if wanted is not None):
            return False
        if query.objects and kind == "subscription":
            subscribed = {o for op in obj.get("objectOperations") or () for o in op.get("objects") or ()}
            if not subscribed & set(query.objects):
                return False
        if query.target_type is not None and not _has_target_type(obj.get("targets"), query.target_type):
            return False
        if query.target_values and not target_values(obj.get("targets"), query.target_type) & set(query.target_values):
            return False
        if query.active and kind == "event":
            end = event_end(obj)
            return end is None or end > self.clock()
        return True

    def search(self, kind: str, query: Query, caller: Caller, scope: Callable[[dict[str, Any]], bool] | None = None
               ) -> list[dict[str, Any]]:
        """Filters are additive (every term must match); then skip and limit.

        A 3.1.0 VEN listing programs or events sees a targeted one only when its query names a target
        it was granted; reading one by id, it needs only the grant (the path takes no targets).
        """
        requested = set(query.target_values)
        hits = [self.present(kind, obj, caller, requested) for obj in self.objects[kind].values()
                if (scope is None or scope(obj)) and self._matches(kind, obj, query)
                and self.visible(kind, obj, caller, requested)]
        return hits[query.skip:query.skip + query.limit]

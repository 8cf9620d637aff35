"""An OpenADR 3 VTN stand-in over aiohttp: the DSO's side of grid-aware charging, for tests and labs.

It serves the REST API of the spec version it is built for (3.0.1 by default, or 3.1.0):
- `POST auth/token` (OAuth2 client credentials, form body or HTTP Basic), opaque bearer tokens with
  the scopes of the client's role (VEN or BL); 3.1.0 adds `GET auth/server`;
- programs, events, reports, subscriptions, vens and resources (3.0.1 under `vens/{venID}/resources`,
  3.1.0 at `resources`) with create, read, update, delete and the list filters of the spec;
- webhook notifications to subscriptions' callback URLs on create, update and delete;
- errors as Problem objects (400 bad body or query, 401/403 token and scope, 404, 409 duplicate name).
Plus a scenario API for tests: create/update/delete objects as the BL, go silent (refuse or hang
connections), serve a malformed event. Callback URLs must point at loopback: this stand-in calls
nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp
import fastjsonschema
from aiohttp import web

from simulators.openadr import gac, schemas
from simulators.openadr.store import (
    KINDS,
    OBJECT_TYPE,
    Caller,
    QueryError,
    Store,
    parse_query,
    target_values,
)

SCOPES = {
    "3.0.1": {"ven": ("read_all", "write_reports", "write_subscriptions", "write_vens"),
              "bl": ("read_all", "write_programs", "write_events", "write_subscriptions", "write_vens")},
    "3.1.0": {"ven": ("read_targets", "read_ven_objects", "write_reports", "write_subscriptions", "write_vens"),
              "bl": ("read_all", "read_bl", "write_programs", "write_events", "write_subscriptions", "write_vens")},
}
# The scope each operation needs (the OpenAPI `security` of each path); 3.1.0 splits the reads.
READ_SCOPE = {"3.0.1": dict.fromkeys(KINDS, "read_all"),
              "3.1.0": {"program": "read_targets", "event": "read_targets", "report": "read_ven_objects",
                        "subscription": "read_ven_objects", "ven": "read_ven_objects", "resource": "read_ven_objects"}}
WRITE_SCOPE = {"program": "write_programs", "event": "write_events", "report": "write_reports",
               "subscription": "write_subscriptions", "ven": "write_vens", "resource": "write_vens"}
NOTIFY_OPERATION = {"3.0.1": {"CREATE": "POST", "UPDATE": "PUT", "DELETE": "DELETE"},
                    "3.1.0": {"CREATE": "CREATE", "UPDATE": "UPDATE", "DELETE": "DELETE"}}
UNIQUE_NAME = {"program": "programName", "ven": "venName"}
COLLECTION = {"program": "programs", "event": "events", "report": "reports", "subscription": "subscriptions",
              "ven": "vens", "resource": "resources"}
MALFORMED_KINDS = ("gac", "schema", "json")


class ProblemError(Exception):
    """Answered as a Problem object with this HTTP status."""

    def __init__(self, status: int, title: str, detail: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail, self.headers = status, title, detail, headers or {}


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    secret: str
    role: str  # "ven" or "bl"


@dataclass
class Token:
    caller: Caller
    scopes: frozenset[str]
    expires_at: float


@dataclass
class Delivery:
    """One webhook call: where, what, and how it went (status, or the error)."""

    url: str
    notification: dict[str, Any]
    status: int | None = None
    error: str | None = None


@dataclass
class VtnConfig:
    version: str = "3.0.1"
    host: str = "127.0.0.1"
    port: int = 0
    base_path: str | None = None  # default /openadr3/<version>
    token_ttl_s: int = 3600
    callback_timeout_s: float = 5.0
    clients: list[ClientCredentials] = field(default_factory=list)

    @property
    def path(self) -> str:
        return (self.base_path if self.base_path is not None else f"/openadr3/{self.version}").rstrip("/")


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


class Vtn:
    """`async with Vtn(VtnConfig(clients=[...])) as vtn:` then point a VEN at `vtn.url`."""

    def __init__(self, config: VtnConfig | None = None, *, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config or VtnConfig()
        if self.config.version not in schemas.VERSIONS:
            raise ValueError(f"spec version must be one of {schemas.VERSIONS}, not {self.config.version!r}")
        self.version = self.config.version
        self.clock = clock or (lambda: datetime.now(UTC))
        self.store = Store(self.version, self.clock)
        self.clients = {c.client_id: c for c in self.config.clients}
        self.tokens: dict[str, Token] = {}
        self.deliveries: list[Delivery] = []
        self.dropped_notifications = 0
        self.requests_seen = 0
        self._silent_until = 0.0
        self._silent_mode = ""
        self._corrupt_event_reads = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = self.config.port
        self.app = self._build_app()

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL a VEN is configured with."""
        return f"http://{self.config.host}:{self.port}{self.config.path}"

    async def start(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.callback_timeout_s))
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await self._open_site(self.config.port)
        return self

    async def _open_site(self, port: int) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.config.host, port, reuse_address=True)
        await self._site.start()
        server = self._site._server  # the bound socket tells the ephemeral port
        sockets = getattr(server, "sockets", None)
        assert sockets, "the site did not bind"
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- scenario API (what the DSO does, from a test) ----------------------------------------

    BL = Caller("scenario", "bl")

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store a valid object as the BL would (schema checked) and notify subscribers."""
        return self._write(kind, body, self.BL, None)

    def update(self, kind: str, object_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.store.get(kind, object_id) is None:
            raise KeyError(object_id)
        return self._write(kind, body, self.BL, object_id)

    def delete(self, kind: str, object_id: str) -> dict[str, Any]:
        obj = self.store.delete(kind, object_id)
        if obj is None:
            raise KeyError(object_id)
        self._notify(kind, "DELETE", obj)
        return obj

    def seed_gac(self, *, eans: list[str], ven_name: str, safe_limit_kw: float, retailer: str = "DSO-NL",
                 program_name: str = "netbewust-gac") -> tuple[dict[str, Any], dict[str, Any]]:
        """The GAC program and its safe-mode event, as a DSO sets them up for one CPO's VEN."""
        program = self.create("program", gac.gac_program(self.version, name=program_name, retailer=retailer))
        safe = self.create("event", gac.safe_mode_event(self.version, program["id"], limit_kw=safe_limit_kw,
                                                        start=self.clock(), eans=eans, ven_name=ven_name))
        return program, safe

    def events(self) -> list[dict[str, Any]]:
        return list(self.store.objects["event"].values())

    def reports(self) -> list[dict[str, Any]]:
        return list(self.store.objects["report"].values())

    def revoke_tokens(self) -> None:
        """Every issued token stops working (as after a VTN key rotation): clients must fetch anew."""
        self.tokens.clear()

    def silent(self) -> bool:
        return time.monotonic() < self._silent_until

    async def go_silent(self, seconds: float, mode: str = "refuse") -> None:
        """For `seconds`: 'refuse' closes the listening socket (connection refused; open connections are
        dropped); 'hang' accepts requests and answers none until the silence ends. Notifications due
        meanwhile are dropped, as from a VTN that is down. Returns at once; the VTN recovers by itself."""
        if mode not in ("refuse", "hang"):
            raise ValueError("mode is 'refuse' or 'hang'")
        if not 0 < seconds <= 600:
            raise ValueError("silence lasts 0-600 s")
        self._silent_until = time.monotonic() + seconds
        self._silent_mode = mode
        if mode == "refuse" and self._site is not None:
            await self._site.stop()
            self._site = None
            self._spawn(self._reopen_after(seconds))

    async def _reopen_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._open_site(self.port)

    def inject_malformed_event(self, program_id: str, kind: str = "gac", *, template: dict[str, Any] | None = None
                               ) -> str | None:
        """Serve a broken event. 'gac': valid OpenADR but outside the GAC profile (units W, a priority,
        two values per interval); 'schema': breaks the OpenADR schema (no intervals, a non-numeric
        interval id); 'json': the next read of events returns a truncated JSON body. Returns the id."""
        if kind not in MALFORMED_KINDS:
            raise ValueError(f"kind is one of {MALFORMED_KINDS}")
        if kind == "json":
            self._corrupt_event_reads += 1
            return None
        body = dict(template or {"programID": program_id, "intervals": []})
        body["programID"] = program_id
        if kind == "gac":
            body |= {"priority": 0, "payloadDescriptors": [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR",
                                                            "payloadType": "IMPORT_CAPACITY_LIMIT", "units": "W"}],
                     "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [50, 60]}]}]}
        else:
            body.pop("intervals", None)
            body["intervalPeriod"] = {"start": "tomorrow", "duration": "a while"}
            body["payloadDescriptors"] = [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW", "id": "x"}]
            body["targets"] = "not-a-list"
        stored = self.store.put("event", body, self.BL)
        self._notify("event", "CREATE", stored)
        return str(stored["id"])

    # ---- HTTP plumbing -----------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._silence_middleware, self._problem_middleware],
                              client_max_size=1024 * 1024)
        base = self.config.path
        app.router.add_post(f"{base}/auth/token", self._token)
        if self.version != "3.0.1":
            app.router.add_get(f"{base}/auth/server", self._auth_server)
            app.router.add_get(f"{base}/notifiers", self._notifiers)
        for kind in ("program", "event", "report", "subscription", "ven"):
            self._add_collection(app, kind, f"{base}/{COLLECTION[kind]}")
        resources = f"{base}/vens/{{venID}}/resources" if self.version == "3.0.1" else f"{base}/resources"
        self._add_collection(app, "resource", resources)
        return app

    def _add_collection(self, app: web.Application, kind: str, path: str) -> None:
        id_name = f"{kind}ID"
        app.router.add_get(path, self._handler(self._list, kind))
        app.router.add_post(path, self._handler(self._create, kind))
        app.router.add_get(f"{path}/{{{id_name}}}", self._handler(self._read, kind))
        app.router.add_put(f"{path}/{{{id_name}}}", self._handler(self._replace, kind))
        app.router.add_delete(f"{path}/{{{id_name}}}", self._handler(self._remove, kind))

    def _handler(self, method: Callable[[web.Request, str], Awaitable[web.StreamResponse]], kind: str
                 ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await method(request, kind)
        return handle

    @web.middleware
    async def _silence_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests_seen += 1
        if self.silent():
            if self._silent_mode == "refuse":  # a keep-alive connection that outlived the listener
                if request.transport is not None:
                    request.transport.abort()
                raise web.HTTPServiceUnavailable()  # written to a closed transport: the client sees a reset
            await asyncio.sleep(max(0.0, self._silent_until - time.monotonic()))
        return await handler(request)

    @web.middleware
    async def _problem_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except ProblemError as exc:
            return self._problem(request, exc.status, exc.title, exc.detail, exc.headers)
        except web.HTTPException as exc:  # aiohttp's own 404/405/413 in the spec's error shape
            if exc.status < 400:
                raise
            return self._problem(request, exc.status, exc.reason, exc.text or "")

    def _problem(self, request: web.Request, status: int, title: str, detail: str,
                 headers: dict[str, str] | None = None) -> web.Response:
        body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
                "instance": str(request.url)}
        return web.json_response(body, status=status, headers=headers)

    # ---- auth --------------------------------------------------------------------------------

    def _auth_failure(self, detail: str) -> ProblemError:
        """3.1.0 documents 401 for a missing or bad token; 3.0.1 documents only 403 for it."""
        status = 401 if self.version != "3.0.1" else 403
        return ProblemError(status, "Unauthorized" if status == 401 else "Forbidden", detail,
                            {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    def _caller(self, request: web.Request, scope: str) -> Caller:
        header = request.headers.get("Authorization", "")
        kind, _, value = header.partition(" ")
        if kind.lower() != "bearer" or not value:
            raise self._auth_failure("a bearer token is required")
        token = self.tokens.get(value.strip())
        if token is None or token.expires_at < time.monotonic():
            raise self._auth_failure("unknown or expired token")
        reads = {"read_targets", "read_ven_objects", "read_bl"}
        if scope not in token.scopes and not (scope in reads and "read_all" in token.scopes):
            raise ProblemError(403, "Forbidden", f"this operation needs scope {scope}",
                               {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})
        return token.caller

    def _token_error(self, status: int, error: str, detail: str) -> web.Response:
        if self.version == "3.0.1":  # RFC 6749 error object
            return web.json_response({"error": error, "error_description": detail}, status=status)
        body = {"type": "about:blank", "title": error, "status": status, "detail": detail}
        return web.json_response(body, status=status)

    async def _token(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-www-form-urlencoded":
            return self._token_error(400, "invalid_request", "send application/x-www-form-urlencoded")
        form = await request.post()
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        basic = request.headers.get("Authorization", "")
        if basic.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return self._token_error(400, "invalid_request", "malformed Basic credentials")
        if form.get("grant_type") != "client_credentials":
            return self._token_error(400, "unsupported_grant_type", "only client_credentials is supported")
        if not client_id or not secret:
            return self._token_error(400, "invalid_request", "client_id and client_secret are required")
        client = self.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.secret, secret):
            # RFC 6749 5.2: 401 when the client authenticated with a header; 3.0.1 documents only 400 otherwise
            status = 401 if basic.lower().startswith("basic ") or self.version != "3.0.1" else 400
            return self._token_error(status, "invalid_client", "unknown client or wrong secret")
        allowed = frozenset(SCOPES[self.version][client.role])
        asked = frozenset(str(form.get("scope", "")).split())
        if asked - allowed:
            return self._token_error(400, "invalid_scope", f"not granted to this client: {sorted(asked - allowed)}")
        granted = asked or allowed
        access = secrets.token_urlsafe(24)
        self.tokens[access] = Token(Caller(client.client_id, client.role), granted,
                                    time.monotonic() + self.config.token_ttl_s)
        return web.json_response({"access_token": access, "token_type": "Bearer",
                                  "expires_in": self.config.token_ttl_s, "scope": " ".join(sorted(granted))})

    async def _auth_server(self, request: web.Request) -> web.Response:
        return web.json_response({"tokenURL": f"{self.url}/auth/token"})

    async def _notifiers(self, request: web.Request) -> web.Response:
        """Which notification bindings exist: webhooks only (the 3.1.0 MQTT binding is not served).
        The spec asks scope read_all, which 3.1.0 gives only to BL; any valid token may read it here."""
        self._caller(request, next(iter(self._token_of(request).scopes), ""))
        return web.json_response({"WEBHOOK": True})

    def _token_of(self, request: web.Request) -> Token:
        _, _, value = request.headers.get("Authorization", "").partition(" ")
        token = self.tokens.get(value.strip())
        if token is None:
            raise self._auth_failure("unknown or missing token")
        return token

    # ---- CRUD --------------------------------------------------------------------------------

    async def _body(self, request: web.Request, kind: str, caller: Caller) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProblemError(400, "Bad Request", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise ProblemError(400, "Bad Request", "the body must be a JSON object")
        if kind == "resource" and self.version == "3.0.1":
            body["venID"] = request.match_info["venID"]
        return body

    def _validate(self, kind: str, body: dict[str, Any], caller: Caller, object_id: str | None) -> dict[str, Any]:
        try:
            schemas.validator(kind, self.version, False)(body)
        except fastjsonschema.JsonSchemaException as exc:
            raise ProblemError(400, "Bad Request", f"{kind}: {exc}") from None
        body = {k: v for k, v in body.items() if k not in ("id", "createdDateTime", "modificationDateTime")}
        self._check_references(kind, body)
        self._check_unique(kind, body, object_id)
        if self.version != "3.0.1":
            self._stamp_client(kind, body, caller)
        return body

    def _check_references(self, kind: str, body: dict[str, Any]) -> None:
        refs = {"event": [("program", "programID")], "report": [("event", "eventID"), ("program", "programID")],
                "subscription": [("program", "programID")], "resource": [("ven", "venID")]}
        for target, key in refs.get(kind, []):
            if body.get(key) is not None and self.store.get(target, body[key]) is None:
                status = 404 if kind == "resource" else 400
                raise ProblemError(status, "Not Found" if status == 404 else "Bad Request",
                                   f"{key} {body[key]} does not exist")
        if kind == "subscription":
            for operation in body.get("objectOperations", []):
                if not _is_loopback(operation["callbackUrl"]):
                    raise ProblemError(400, "Bad Request", "this stand-in calls back on loopback addresses only")

    def _check_unique(self, kind: str, body: dict[str, Any], object_id: str | None) -> None:
        name_key = UNIQUE_NAME.get(kind)
        if name_key is None:
            return
        for other in self.store.objects[kind].values():
            if other["id"] != object_id and other.get(name_key) == body.get(name_key):
                # 3.1.0 lists no 409 for creating a ven, so a duplicate venName is a bad request there.
                status = 400 if (kind == "ven" and object_id is None and self.version != "3.0.1") else 409
                raise ProblemError(status, "Conflict" if status == 409 else "Bad Request",
                                   f"{name_key} {body.get(name_key)!r} exists")

    def _stamp_client(self, kind: str, body: dict[str, Any], caller: Caller) -> None:
        """3.1.0 object privacy: the VTN writes the VEN's clientID; only BL writes ven/resource targets."""
        request_type = body.pop("objectType", None)
        if kind in ("ven", "resource") and caller.role == "ven":
            if body.get("targets"):
                raise ProblemError(400, "Bad Request", "only BL clients may write targets to ven and resource objects")
            if request_type and request_type.startswith("BL_"):
                raise ProblemError(403, "Forbidden", f"{request_type} is for BL clients")
            body["clientID"] = caller.client_id
        elif kind in ("ven", "resource"):
            if request_type and request_type.startswith("VEN_"):
                raise ProblemError(403, "Forbidden", f"{request_type} is for VEN clients")
            if not body.get("clientID"):
                raise ProblemError(400, "Bad Request", f"a BL-written {kind} names its clientID")
        elif kind in ("report", "subscription"):
            body["clientID"] = caller.client_id

    def _write(self, kind: str, body: dict[str, Any], caller: Caller, object_id: str | None) -> dict[str, Any]:
        clean = self._validate(kind, body, caller, object_id)
        stored = self.store.put(kind, clean, caller, object_id)
        self._notify(kind, "UPDATE" if object_id else "CREATE", stored)
        return stored

    def _own(self, request: web.Request, kind: str, caller: Caller) -> dict[str, Any]:
        object_id = request.match_info[f"{kind}ID"]
        obj = self.store.get(kind, object_id)
        if (kind == "resource" and self.version == "3.0.1" and obj is not None
                and obj.get("venID") != request.match_info["venID"]):
            obj = None
        if obj is None or not self.store.visible(kind, obj, caller):
            raise ProblemError(404, "Not Found", f"no {kind} {object_id}")
        return obj

    async def _list(self, request: web.Request, kind: str) -> web.StreamResponse:
        caller = self._caller(request, READ_SCOPE[self.version][kind])
        try:
            query = parse_query(request.query, self.version)
        except QueryError as exc:
            raise ProblemError(400, "Bad Request", str(exc)) from None
        scope = None
        if kind == "resource" and self.version == "3.0.1":
            ven_id = request.match_info["venID"]
            if self.store.get("ven", ven_id) is None:
                raise ProblemError(404, "Not Found", f"no ven {ven_id}")
            scope = lambda obj: obj.get("venID") == ven_id
        return self._json(kind, self.store.search(kind, query, caller, scope))

    def _json(self, kind: str, body: Any, status: int = 200) -> web.StreamResponse:
        if kind == "event" and self._corrupt_event_reads and status == 200:
            self._corrupt_event_reads -= 1
            text = json.dumps(body)
            return web.Response(text=text[: max(1, len(text) // 2)], content_type="application/json")
        return web.json_response(body, status=status)

    async def _read(self, request: web.Request, kind: str) -> web.StreamResponse:
        caller = self._caller(request, READ_SCOPE[self.version][kind])
        return self._json(kind, self.store.present(kind, self._own(request, kind, caller), caller))

    async def _create(self, request: web.Request, kind: str) -> web.StreamResponse:
        caller = self._caller(request, WRITE_SCOPE[kind])
        if kind == "resource" and self.version == "3.0.1" and self.store.get("ven", request.match_info["venID"]) is None:
            raise ProblemError(404, "Not Found", f"no ven {request.match_info['venID']}")
        stored = self._write(kind, await self._body(request, kind, caller), caller, None)
        return web.json_response(stored, status=201)

    async def _replace(self, request: web.Request, kind: str) -> web.StreamResponse:
        caller = self._caller(request, WRITE_SCOPE[kind])
        obj = self._own(request, kind, caller)
        stored = self._write(kind, await self._body(request, kind, caller), caller, obj["id"])
        return web.json_response(stored)

    async def _remove(self, request: web.Request, kind: str) -> web.StreamResponse:
        caller = self._caller(request, WRITE_SCOPE[kind])
        obj = self._own(request, kind, caller)
        return web.json_response(self.delete(kind, obj["id"]))

    # ---- notifications -----------------------------------------------------------------------

    def _subscribers(self, kind: str, operation: str, obj: dict[str, Any]) -> list[tuple[dict[str, Any], Any]]:
        """(subscription, objectOperation) pairs that want this change, per program, targets and privacy."""
        wanted = []
        program_id = self.store.program_of(kind, obj)
        for sub in self.store.objects["subscription"].values():
            if sub.get("programID") and program_id is not None and sub["programID"] != program_id:
                continue
            sub_targets = set(_terms(sub.get("targets")))
            if sub_targets and _terms(obj.get("targets")) and not sub_targets & set(_terms(obj.get("targets"))):
                continue
            owner = self.store.owner.get(sub["id"], self.BL)
            subscriber = Caller(sub.get("clientID") or owner.client_id, owner.role)
            if not self.store.visible(kind, obj, subscriber):
                continue
            for operation_spec in sub.get("objectOperations") or ():
                if OBJECT_TYPE[kind] in operation_spec.get("objects", ()) and operation in operation_spec.get(
                        "operations", ()):
                    wanted.append((sub, operation_spec))
        return wanted

    def _notify(self, kind: str, operation: str, obj: dict[str, Any]) -> None:
        for sub, operation_spec in self._subscribers(kind, operation, obj):
            notification: dict[str, Any] = {"objectType": OBJECT_TYPE[kind],
                                            "operation": NOTIFY_OPERATION[self.version][operation], "object": obj}
            if obj.get("targets") is not None:
                notification["targets"] = obj["targets"]
            if self.silent():
                self.dropped_notifications += 1
                continue
            self._spawn(self._deliver(operation_spec["callbackUrl"], operation_spec.get("bearerToken"), notification))

    async def _deliver(self, url: str, bearer: str | None, notification: dict[str, Any]) -> None:
        delivery = Delivery(url, notification)
        self.deliveries.append(delivery)
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        assert self._session is not None
        try:
            async with self._session.post(url, json=notification, headers=headers) as response:
                delivery.status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"


def _terms(targets: Any) -> list[str]:
    return sorted(target_values(targets if isinstance(targets, list) else None))

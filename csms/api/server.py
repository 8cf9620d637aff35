"""The operator API as a daemon component: an aiohttp app in the daemon's own event loop.

It shares the loop with the station edge, so every handler only reads the daemon's state or
awaits the same calls the daemon makes itself; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Histogram

from csms.api import commands, events, grid, health, openadr, openapi, operations, stations, tokens, transactions
from csms.api.auth import ADMIN, READ, Principal, Tokens, bearer_token, ensure_token_file
from csms.api.config import ApiConfig
from csms.api.http import CONTEXT, PRINCIPAL, ApiContext, ApiError, Handler, Route, Routes, json_response

log = logging.getLogger("csms.api")

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "static")
ROUTE_MODULES = (health, stations, transactions, commands, operations, tokens, grid, events, openadr)
ROUTE: web.AppKey[dict[Any, Route]] = web.AppKey("routes")
SHUTDOWN_TIMEOUT_S = 3.0
MAX_BODY_BYTES = 1024 * 1024


def all_routes() -> list[Route]:
    return [r for m in ROUTE_MODULES for r in m.routes.items] + openapi.routes.items + _page_routes.items


_page_routes = Routes()  # the dashboard page: public (it holds no data and asks for the token itself)


@_page_routes.get("/", health.PUBLIC)
async def dashboard(request: web.Request) -> web.StreamResponse:
    """The live dashboard (static HTML; it asks for the API token itself)."""
    return web.FileResponse(os.path.join(STATIC_DIR, "index.html"), headers={"Cache-Control": "no-cache"})


def _auth_message(request: web.Request) -> str:
    if request.headers.get("Authorization") is None:
        return "missing API token: send the header 'Authorization: Bearer <token>'"
    return "invalid API token"


# The dashboard loads its script, style and data from this origin only and is never framed;
# every answer (JSON, SSE, static files, errors) carries these.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                                "form-action 'self'; frame-ancestors 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


class ApiServer:
    """The HTTP component: JSON API, SSE stream, OpenAPI document and the dashboard."""

    def __init__(self, cfg: ApiConfig, context: ApiContext, *, token_file: str, port: int,
                 reuse_port: bool = False) -> None:
        self.context = context
        self.reuse_port = reuse_port  # several worker processes listen on the same port (SO_REUSEPORT)
        self.own_socket: socket.socket | None = None  # with reuse_port: a port of this worker's own
        self.cfg = cfg
        self.token_file = token_file
        self.listen_port = port
        self.file_token: str | None = None
        self.tokens = Tokens(cfg.tokens, None)
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None
        self.app = self._build_app()
        r = context.metrics.registry
        self.requests = Counter("csms_api_requests_total", "Operator API requests", ["method", "route", "status"],
                                registry=r)
        self.latency = Histogram("csms_api_request_seconds", "Operator API request latency (SSE excluded)",
                                 registry=r)

    # App ---------------------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=MAX_BODY_BYTES)
        app[CONTEXT] = self.context
        app.on_response_prepare.append(_security_headers)
        app[events.STREAMS] = set()
        app[events.HEARTBEAT_S] = self.cfg.sse_heartbeat_s
        by_handler: dict[Any, Route] = {}
        for route in all_routes():
            if route.path == "/" and not self.cfg.dashboard:
                continue
            app.router.add_route(route.method, route.path, route.handler)
            by_handler[route.handler] = route
        app[ROUTE] = by_handler
        if self.cfg.dashboard:
            app.router.add_static("/static/", STATIC_DIR, show_index=False, append_version=False)
        return app

    @property
    def port(self) -> int:
        assert self.runner is not None and self.runner.addresses, "the API is not started"
        return int(self.runner.addresses[0][1])

    @property
    def own_port(self) -> int:
        """A port that reaches this process alone (with a shared port: its own second one)."""
        return int(self.own_socket.getsockname()[1]) if self.own_socket is not None else self.port

    @property
    def url(self) -> str:
        host = self.cfg.host if ":" not in self.cfg.host else f"[{self.cfg.host}]"
        return f"http://{host}:{self.port}"

    # Middlewares -------------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except ApiError as exc:
            status = exc.status
            out = json_response({"error": exc.message, **exc.extra}, exc.status)
            if exc.status == 401:
                out.headers["WWW-Authenticate"] = 'Bearer realm="netbewust"'
            return out
        except web.HTTPException as exc:
            status = exc.status
            if exc.status < 400:
                raise
            if exc.status == 404:
                message = f"no such endpoint: {request.method} {request.path}"
            elif exc.status == 405:
                allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
                message = f"method {request.method} is not allowed on {request.path} (allowed: {allowed})"
            elif exc.status == 413:
                message = f"request body too large (limit {MAX_BODY_BYTES} bytes)"
            else:
                message = exc.reason
            out = json_response({"error": message}, exc.status)
            if "Allow" in exc.headers:
                out.headers["Allow"] = exc.headers["Allow"]
            return out
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:  # noqa: BLE001 - never leak a stack trace to the client
            self.context.errors.failed(log, f"API {request.method} {route}", exc, f"{request.path} failed")
            return json_response({"error": "internal error; the daemon logged the details"}, 500)
        finally:
            self.requests.labels(request.method, route, str(status)).inc()
            if route != "/api/events":
                self.latency.observe(time.perf_counter() - started)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.app[ROUTE].get(request.match_info.handler)
        if route is None:  # unmatched (404/405) or a static file of the dashboard
            return await handler(request)
        needed = route.scope
        if needed == "metrics":
            needed = health.PUBLIC if self.cfg.metrics_public else READ
        if needed == health.PUBLIC:
            return await handler(request)
        token = bearer_token(request.headers.get("Authorization"))
        principal: Principal | None = self.tokens.verify(token) if token is not None else None
        if principal is None:
            raise ApiError(401, _auth_message(request))
        if not principal.allows(needed):
            raise ApiError(403, f"token {principal.name!r} has scope {principal.scope!r}; "
                                f"{request.method} {route.path} needs {ADMIN!r}")
        request[PRINCIPAL] = principal.name
        return await handler(request)

    # Lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self.file_token = ensure_token_file(self.token_file, self.cfg.generate_token)
        self.tokens = Tokens(self.cfg.tokens, self.file_token)
        if not len(self.tokens):
            log.warning("the operator API has no tokens (no token file at %s, none in api.tokens): "
                        "every request that needs one is refused", self.token_file)
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await self.runner.setup()
        self.site = web.TCPSite(self.runner, self.cfg.host, self.listen_port, reuse_port=self.reuse_port or None)
        await self.site.start()
        if self.reuse_port:  # the shared port reaches any worker: one more that reaches this one
            self.own_socket = socket.create_server((self.cfg.host, 0))
            await web.SockSite(self.runner, self.own_socket).start()
        log.info("operator API%s on %s/ (admin token file: %s)", " and dashboard" if self.cfg.dashboard else "",
                 self.url, self.token_file if self.file_token else "none")

    async def stop(self) -> None:
        events.close_streams(self.app)
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

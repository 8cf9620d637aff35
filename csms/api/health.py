"""Liveness, readiness and the Prometheus metrics of the daemon."""

from __future__ import annotations

from aiohttp import web

from csms.api.http import Routes, context_of, json_response

routes = Routes()
PUBLIC = "public"  # pseudo-scope: no token needed (probes of an orchestrator)
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@routes.get("/health/live", PUBLIC)
async def live(request: web.Request) -> web.Response:
    """The process answers: its event loop is not stuck."""
    return json_response({"status": "ok"})


@routes.get("/health/ready", PUBLIC)
async def ready(request: web.Request) -> web.Response:
    """Ready when the daemon has started and the station endpoint accepts connections."""
    context = context_of(request)
    checks = context.readiness()
    ok = all(checks.values())
    return json_response({"status": "ok" if ok else "not ready", "checks": checks,
                          "stations_connected": len(context.connections),
                          "listeners": context.listeners() if context.listeners is not None else []},
                         200 if ok else 503)


@routes.get("/metrics", "metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition: stations, messages by action, CALLERRORs, latencies, grid load."""
    body = context_of(request).metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": PROMETHEUS_TYPE})

"""Grid control: transformers with the limit in force, measured and planned load, sessions and
their setpoints; post a limit (same format as the MQTT signal) and set a session's energy need.

Everything delegates to the grid controller (``daemon.grid``); without it these routes answer
503 so an operator sees at once that grid control is not configured.
"""

from __future__ import annotations

import inspect
from datetime import datetime
from typing import Any

from aiohttp import web

from csms.api.auth import ADMIN
from csms.api.http import ApiError, Routes, daemon_of, json_response, query_int, read_body

routes = Routes()

NOT_CONFIGURED = "grid control is not configured"


def grid_of(request: web.Request) -> Any:
    grid = getattr(daemon_of(request), "grid", None)
    if grid is None:
        raise ApiError(503, NOT_CONFIGURED)
    return grid


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _signal_listener(daemon: Any, grid: Any) -> Any:
    """The grid's SignalListener (``submit``), wherever the grid package hangs it."""
    for owner, name in ((grid, "signals"), (daemon, "grid_signals"), (grid, "signal_listener"),
                        (grid, "listener")):
        listener = getattr(owner, name, None)
        if listener is not None and hasattr(listener, "submit"):
            return listener
    raise ApiError(503, "limit signals are not configured (the grid controller has no signal listener)")


def _events(grid: Any, limit: int) -> list[Any]:
    source = getattr(grid, "events", None)
    if callable(source):
        source = source()
    items = list(source or [])
    return items[-limit:]


@routes.get("/api/grid")
async def grid_snapshot(request: web.Request) -> web.Response:
    """Transformers (limit in force and its source, measured and planned load) and sessions."""
    return json_response(await _maybe_await(grid_of(request).snapshot()))


@routes.get("/api/grid/events")
async def grid_events(request: web.Request) -> web.Response:
    """The controller's recent events: signals, pushes, rejections, safe mode (oldest first)."""
    limit = query_int(request, "limit", 200, 1, 10000) or 200
    return json_response({"events": _events(grid_of(request), limit)})


@routes.post("/api/grid/transformers/{transformer_id}/limit", ADMIN, body="grid_limit")
async def post_limit(request: web.Request) -> web.Response:
    """Submit a limit signal for one transformer, exactly as if it came in over MQTT."""
    grid = grid_of(request)
    body = await read_body(request, "grid_limit")
    listener = _signal_listener(daemon_of(request), grid)
    transformer_id = request.match_info["transformer_id"]
    try:
        from csms.grid.limits import SignalError
    except ImportError:  # pragma: no cover - only without the grid package
        SignalError = ValueError  # noqa: N806
    known = getattr(getattr(listener, "grid", None), "transformers", None)
    if known is not None and transformer_id not in known:
        raise ApiError(404, f"unknown transformer {transformer_id!r} (known: {', '.join(sorted(known))})")
    try:
        signal = await listener.submit(transformer_id, body)
    except SignalError as exc:
        raise ApiError(422, f"limit signal rejected: {exc}") from None
    return json_response({"transformer_id": transformer_id, "accepted": True,
                          "signal_id": getattr(signal, "signal_id", None), "source": getattr(signal, "source", None),
                          "intervals": [{"start": start, "end": end, "limit_kw": kw}
                                        for start, end, kw in getattr(signal, "intervals", ())]}, 202)


@routes.post("/api/grid/sessions/{station_id}/{evse_id}/need", ADMIN, body="session_need")
async def set_need(request: web.Request) -> web.Response:
    """The session's energy need and departure, as told by the driver or an app."""
    grid = grid_of(request)
    try:
        evse_id = int(request.match_info["evse_id"])
    except ValueError:
        raise ApiError(400, f"evse_id must be an integer, got {request.match_info['evse_id']!r}",
                       field="evse_id") from None
    body = await read_body(request, "session_need")
    departure = body.get("departure")
    if departure is not None:
        try:
            departure = datetime.fromisoformat(departure.replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(422, f"departure is not an ISO 8601 time: {departure!r}", field="departure") from None
        if departure.tzinfo is None:
            raise ApiError(422, "departure needs a time zone (e.g. 'Z')", field="departure")
    station_id = request.match_info["station_id"]
    try:
        result = await _maybe_await(grid.set_session_need(station_id, evse_id, energy_kwh=body.get("energy_kwh"),
                                                          departure=departure,
                                                          guaranteed_kwh=body.get("guaranteed_kwh")))
    except LookupError as exc:
        raise ApiError(404, str(exc).strip("'\"") or f"no session on {station_id} EVSE {evse_id}") from None
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    if result is None or result is False:
        raise ApiError(404, f"no charging session on station {station_id!r} EVSE {evse_id}")
    return json_response({"station_id": station_id, "evse_id": evse_id, "session": result}
                         if result is not True else {"station_id": station_id, "evse_id": evse_id})

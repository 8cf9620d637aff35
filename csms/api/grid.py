"""Grid control: transformers with the limit in force, measured and planned load, sessions and
their setpoints; post a limit (same format as the MQTT signal) and set a session's energy need.

Everything delegates to the grid part (a :class:`csms.interfaces.GridService`); without it these
routes answer 503 so an operator sees at once that grid control is not configured. With several
nodes only the elected leader runs the grid part: the others forward these requests to its API.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import aiohttp
from aiohttp import web

from csms.api.auth import ADMIN
from csms.api.http import ApiError, Handler, Routes, context_of, json_response, query_int, read_body
from csms.cluster_grid import NotLeading
from csms.grid.history import since_from
from csms.grid.model.limits import SignalError
from csms.interfaces import GridService

routes = Routes()

NOT_CONFIGURED = "grid control is not configured"


#: Marks a request one node forwarded to the grid's leader (a leader never forwards it again).
FORWARDED = "X-Netbewust-Grid-Forwarded"
FORWARD_TIMEOUT_S = 15.0
#: On an answer the leader gave through another node: the leader's API address.
ANSWERED_BY = "X-Netbewust-Grid-Answered-By"
NO_LEADER = ("no node runs the grid controller at this moment (a new leader is elected within a lease): "
             "try again shortly")


def at_the_leader(handler: Handler) -> Handler:
    """Run the route here if this node runs the grid part, else at the node that leads the grid."""
    @functools.wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        context = context_of(request)
        if context.grid_leader is not None:
            try:
                leader_url = await context.grid_leader()
            except NotLeading:
                leader_url = ""
            if leader_url is not None:
                return await _forward_to_leader(request, leader_url)
        try:
            return await handler(request)
        except NotLeading:  # the term ended while the request ran
            raise ApiError(503, NO_LEADER) from None
    return run


async def _forward_to_leader(request: web.Request, leader_url: str | None) -> web.Response:
    if not leader_url or request.headers.get(FORWARDED):
        raise ApiError(503, NO_LEADER)
    headers = {name: value for name in ("Authorization", "Content-Type") if (value := request.headers.get(name))}
    headers[FORWARDED] = "1"
    body = await request.read()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)) as session, \
                session.request(request.method, leader_url + request.path_qs, data=body or None,
                                headers=headers) as answer:
            payload = await answer.read()
            return web.Response(status=answer.status, body=payload, content_type=answer.content_type,
                                headers={ANSWERED_BY: leader_url})
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ApiError(503, f"the node leading the grid controller ({leader_url}) did not answer: "
                            f"{type(exc).__name__}: try again shortly") from None


def grid_of(request: web.Request) -> GridService:
    grid = context_of(request).grid
    if grid is None:
        raise ApiError(503, NOT_CONFIGURED)
    return grid


@routes.get("/api/grid")
@at_the_leader
async def grid_snapshot(request: web.Request) -> web.Response:
    """Transformers (limit in force and its source, measured and planned load) and sessions."""
    return json_response(grid_of(request).snapshot())


@routes.get("/api/grid/events")
@at_the_leader
async def grid_events(request: web.Request) -> web.Response:
    """The controller's recent events: signals, pushes, rejections, safe mode (oldest first)."""
    limit = query_int(request, "limit", 200, 1, 10000) or 200
    return json_response({"events": grid_of(request).recent_events(limit)})


@routes.get("/api/grid/transformers/{transformer_id}/history")
@at_the_leader
async def load_history(request: web.Request) -> web.Response:
    """The group's load history (total, EV, non-EV, limit, planned) at the history's resolution, from
    ``since`` (ISO time, or seconds back from now) or the whole kept span."""
    grid = grid_of(request)
    transformer_id = request.match_info["transformer_id"]
    try:
        since = since_from(request.query.get("since"), datetime.now(UTC), 366 * 86400.0)
    except ValueError as exc:
        raise ApiError(400, f"since must be an ISO 8601 time or seconds back from now: {exc}",
                       field="since") from None
    try:
        return json_response(grid.load_history(transformer_id, since))
    except KeyError:
        raise ApiError(404, f"unknown transformer {transformer_id!r} (known: "
                            f"{', '.join(sorted(grid.limits.transformer_ids))})") from None


@routes.post("/api/grid/transformers/{transformer_id}/limit", ADMIN, body="grid_limit")
@at_the_leader
async def post_limit(request: web.Request) -> web.Response:
    """Submit a limit signal for one transformer, exactly as if it came in over MQTT."""
    intake = grid_of(request).limits
    body = await read_body(request, "grid_limit")
    transformer_id = request.match_info["transformer_id"]
    if not intake.knows(transformer_id):
        raise ApiError(404, f"unknown transformer {transformer_id!r} (known: "
                            f"{', '.join(sorted(intake.transformer_ids))})")
    try:
        signal = await intake.submit(transformer_id, body)
    except SignalError as exc:
        raise ApiError(422, f"limit signal rejected: {exc}") from None
    return json_response({"transformer_id": transformer_id, "accepted": True, "signal_id": signal.signal_id,
                          "source": signal.source,
                          "intervals": [{"start": start, "end": end, "limit_kw": kw}
                                        for start, end, kw in signal.intervals]}, 202)


@routes.delete("/api/grid/transformers/{transformer_id}/limit", ADMIN)
@at_the_leader
async def clear_limit(request: web.Request) -> web.Response:
    """Remove the limit one source set for a transformer (default source: ``operator``, as ``csms limit``
    posts it), for good: it does not come back after a restart."""
    intake = grid_of(request).limits
    transformer_id = request.match_info["transformer_id"]
    source = request.query.get("source", "operator")
    if not intake.knows(transformer_id):
        raise ApiError(404, f"unknown transformer {transformer_id!r} (known: "
                            f"{', '.join(sorted(intake.transformer_ids))})")
    removed = await intake.clear(transformer_id, source)
    if removed is None:
        raise ApiError(404, f"no limit of source {source!r} in force on {transformer_id!r}")
    return json_response({"transformer_id": transformer_id, "source": source, "cleared": removed.signal_id})


@routes.post("/api/grid/sessions/{station_id}/{evse_id}/need", ADMIN, body="session_need")
@at_the_leader
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
        result = grid.set_session_need(station_id, evse_id, energy_kwh=body.get("energy_kwh"), departure=departure,
                                       guaranteed_kwh=body.get("guaranteed_kwh"))
    except LookupError as exc:
        raise ApiError(404, str(exc).strip("'\"") or f"no session on {station_id} EVSE {evse_id}") from None
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    await grid.stored()  # the need survives a restart before we say it was taken
    return json_response({"station_id": station_id, "evse_id": evse_id, "session": result})

"""Server-sent events: the daemon's bus, live, for the dashboard and ``csms tail``.

Each event is one ``data:`` line of JSON: ``{"seq", "kind", "station_id", "at", "data"}``. A slow
client gets a bounded queue and loses its oldest events rather than slowing the daemon; a
comment line every ``sse_heartbeat_s`` keeps proxies from closing an idle stream. An event that
cannot be encoded is skipped with a logged reason (once per incident); the stream goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from aiohttp import web

from csms.api.http import ApiError, Routes, context_of, dumps
from csms.domain.events import Event

log = logging.getLogger("csms.api")
routes = Routes()
STREAMS: web.AppKey[set[asyncio.Queue[Any]]] = web.AppKey("sse_streams", set)
HEARTBEAT_S: web.AppKey[float] = web.AppKey("sse_heartbeat_s")
QUEUE_SIZE = 2000
_seq = itertools.count(1)
_CLOSE = object()


def event_json(ev: Event, seq: int) -> bytes:
    return dumps({"seq": seq, "kind": ev.kind, "station_id": ev.station_id, "at": ev.at.isoformat(),
                  "data": ev.data()})


def close_streams(app: web.Application) -> None:
    """Make every open stream finish (the daemon is stopping)."""
    streams: set[asyncio.Queue[Any]] = app[STREAMS]
    for q in list(streams):
        if q.full():
            q.get_nowait()
        q.put_nowait(_CLOSE)


@routes.get("/api/events")
async def events(request: web.Request) -> web.StreamResponse:
    """The live event stream; ``kinds`` (comma-separated prefixes) and ``station_id`` filter it."""
    kinds = [k.strip() for k in request.query.get("kinds", "").split(",") if k.strip()]
    if any(len(k) > 100 for k in kinds) or len(kinds) > 50:
        raise ApiError(400, "kinds: at most 50 prefixes of at most 100 characters", field="kinds")
    station = request.query.get("station_id") or None
    context = context_of(request)
    q: asyncio.Queue[Any]
    q, unsubscribe = context.bus.queue(None, maxsize=QUEUE_SIZE)
    streams = request.app[STREAMS]
    streams.add(q)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n: connected\n\n")
        heartbeat = request.app[HEARTBEAT_S]
        while True:
            try:
                ev = await asyncio.wait_for(q.get(), heartbeat)
            except asyncio.TimeoutError:
                await response.write(b": ping\n\n")
                continue
            if ev is _CLOSE:
                break
            if kinds and not any(ev.kind.startswith(k) for k in kinds):
                continue
            if station is not None and ev.station_id != station:
                continue
            try:
                line = b"data: " + event_json(ev, next(_seq)) + b"\n\n"
            except (TypeError, ValueError) as exc:  # orjson: nesting or integers it cannot encode
                context.errors.failed(log, "live stream", exc, f"{ev.kind} event of {ev.station_id} skipped")
                continue
            await response.write(line)
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away
    finally:
        unsubscribe()
        streams.discard(q)
    return response

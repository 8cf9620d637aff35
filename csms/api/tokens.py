"""Id tokens (RFID cards, app tokens ...) the central system authorizes: add, list, block, remove."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from csms.api.auth import ADMIN
from csms.api.http import ApiError, Routes, context_of, iso, json_response, read_body
from csms.domain.records import IdTokenRecord

routes = Routes()


def token_out(t: IdTokenRecord) -> dict[str, Any]:
    return {"id_token": t.id_token, "type": t.type, "status": t.status, "expiry": iso(t.expiry),
            "group_id": t.group_id}


async def _existing(request: web.Request) -> IdTokenRecord:
    token = request.match_info["id_token"]
    rec = await context_of(request).store.get_id_token(token)
    if rec is None:
        raise ApiError(404, f"unknown id token {token!r}")
    return rec


@routes.get("/api/id-tokens")
async def list_tokens(request: web.Request) -> web.Response:
    tokens = await context_of(request).store.list_id_tokens()
    return json_response({"id_tokens": [token_out(t) for t in sorted(tokens, key=lambda t: t.id_token)]})


@routes.get("/api/id-tokens/{id_token}")
async def get_token(request: web.Request) -> web.Response:
    return json_response(token_out(await _existing(request)))


@routes.post("/api/id-tokens", ADMIN, body="id_token")
async def add_token(request: web.Request) -> web.Response:
    """Add or replace a token (201 when it is new)."""
    store = context_of(request).store
    body = await read_body(request, "id_token")
    expiry = None
    if body.get("expiry") is not None:
        try:
            expiry = datetime.fromisoformat(body["expiry"].replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(422, f"expiry is not an ISO 8601 time: {body['expiry']!r}", field="expiry") from None
        if expiry.tzinfo is None:
            raise ApiError(422, "expiry needs a time zone (e.g. 'Z')", field="expiry")
    new = await store.get_id_token(body["id_token"]) is None
    rec = IdTokenRecord(body["id_token"], body.get("type", "ISO14443"), body.get("status", "Accepted"), expiry,
                        body.get("group_id"))
    await store.put_id_token(rec)
    return json_response(token_out(rec), 201 if new else 200)


@routes.post("/api/id-tokens/{id_token}/block", ADMIN)
async def block_token(request: web.Request) -> web.Response:
    rec = await _existing(request)
    rec.status = "Blocked"
    await context_of(request).store.put_id_token(rec)
    return json_response(token_out(rec))


@routes.delete("/api/id-tokens/{id_token}", ADMIN)
async def remove_token(request: web.Request) -> web.Response:
    await _existing(request)
    await context_of(request).store.delete_id_token(request.match_info["id_token"])
    return web.Response(status=204)

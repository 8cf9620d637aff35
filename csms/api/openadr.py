"""The OpenADR VEN's webhook: where the DSO's VTN calls back when programs or events change.

Public as far as our operator tokens go: the VTN proves itself with the bearer token the VEN gave in
its subscription, which the VEN checks (csms/grid/sources/openadr/source.py). The notification only
wakes the VEN: it then reads the objects from the VTN with its own credentials, so a forged body
changes nothing.
"""

from __future__ import annotations

import json

from aiohttp import web

from csms.api.auth import bearer_token
from csms.api.health import PUBLIC
from csms.api.http import ApiError, Routes, context_of, json_response

routes = Routes()

NOTIFY_PATH = "/openadr/notify"
MAX_NOTIFICATION_BYTES = 256 * 1024


@routes.post(NOTIFY_PATH, PUBLIC)
async def notify(request: web.Request) -> web.Response:
    """An OpenADR 3 notification (objectType, operation, object) from the VTN."""
    receiver = context_of(request).openadr
    if receiver is None:
        raise ApiError(404, "no OpenADR VEN with a webhook is configured (grid.openadr.webhook_url)")
    raw = await request.read()
    if len(raw) > MAX_NOTIFICATION_BYTES:
        raise ApiError(413, f"notification larger than {MAX_NOTIFICATION_BYTES} bytes")
    try:
        body = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        body = None  # the receiver says what is wrong (after checking who calls)
    status, detail = receiver.notified(bearer_token(request.headers.get("Authorization")), body)
    if status >= 400:
        raise ApiError(status, detail)
    return json_response({"accepted": True, "detail": detail})

"""OCPP-J frames: parse an incoming websocket message, serialise outgoing ones.

Parsing is strict and never raises anything but :class:`OcppError`, so the connection can always
answer with a CALLERROR. When the message id cannot be read the CALLERROR carries id ``"-1"``,
as OCPP-J 2.0.1 prescribes; a frame that is not JSON at all also gets that answer (the `ocpp`
package silently drops such frames).

A payload may nest objects and arrays at most :data:`MAX_DEPTH` levels deep (the official
messages need about a dozen; customData and DataTransfer data are free-form). Deeper JSON is
refused with FormatViolation and the frame's own id, also when the JSON parser itself gave up
(its limit is about 1,000 levels): the id is then read from the start of the frame. Nothing
deeper ever reaches a handler, a store, the bus or a JSON encoder with a lower limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from csms.protocol.errors import OcppError

CALL, CALLRESULT, CALLERROR = 2, 3, 4
UNKNOWN_ID = "-1"
MAX_ID_LENGTH = 36  # OCPP-J: the message id is a string of at most 36 characters
MAX_DEPTH = 32  # levels of objects and arrays in a payload (the payload itself is level 1)
# The start of a frame: its message type and id, readable even when the rest is too deep to parse.
_FRAME_START = re.compile(r'\s*\[\s*(\d{1,3})\s*,\s*("(?:[^"\\]|\\.){1,216}")\s*,')


@dataclass(slots=True)
class Call:
    unique_id: str
    action: str
    payload: dict[str, Any]


@dataclass(slots=True)
class CallResult:
    unique_id: str
    payload: dict[str, Any]


@dataclass(slots=True)
class CallError:
    unique_id: str
    code: str
    description: str
    details: dict[str, Any]


Frame = Call | CallResult | CallError


class FrameError(OcppError):
    """A frame that cannot be handled; ``unique_id`` is what the CALLERROR must echo.

    ``answers`` is True for a broken CALLRESULT/CALLERROR: a response is never answered (OCPP-J),
    it fails the call it belongs to instead.
    """

    def __init__(self, unique_id: str, code: str, description: str, answers: bool = False) -> None:
        super().__init__(code, description)
        self.unique_id = unique_id
        self.answers = answers


def parse(raw: str | bytes) -> Frame:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise _too_deep(raw) from None
        raise FrameError(UNKNOWN_ID, "RpcFrameworkError", f"frame is not valid JSON: {exc}") from None
    if not isinstance(msg, list) or not msg:
        raise FrameError(UNKNOWN_ID, "RpcFrameworkError", "frame must be a non-empty JSON array")
    if len(msg) < 2 or not isinstance(msg[1], str) or not msg[1] or len(msg[1]) > MAX_ID_LENGTH:
        raise FrameError(UNKNOWN_ID, "RpcFrameworkError",
                         "message id (element 2) must be a string of 1-36 characters")
    type_id, unique_id = msg[0], msg[1]
    if type_id == CALL:
        if len(msg) != 4:
            raise FrameError(unique_id, "RpcFrameworkError", f"a CALL has 4 elements, got {len(msg)}")
        action, payload = msg[2], msg[3]
        if not isinstance(action, str) or not action:
            raise FrameError(unique_id, "RpcFrameworkError", "action (element 3) must be a non-empty string")
        if not isinstance(payload, dict):
            raise FrameError(unique_id, "FormatViolation", "payload (element 4) must be a JSON object")
        if deeper_than(raw, payload, MAX_DEPTH):
            raise FrameError(unique_id, "FormatViolation", f"payload nested deeper than {MAX_DEPTH} levels")
        return Call(unique_id, action, payload)
    if type_id == CALLRESULT:
        if len(msg) != 3 or not isinstance(msg[2], dict):
            raise FrameError(unique_id, "FormatViolation", "a CALLRESULT is [3, id, {payload}]", answers=True)
        if deeper_than(raw, msg[2], MAX_DEPTH):
            raise FrameError(unique_id, "FormatViolation", f"payload nested deeper than {MAX_DEPTH} levels",
                             answers=True)
        return CallResult(unique_id, msg[2])
    if type_id == CALLERROR:
        if len(msg) != 5 or not isinstance(msg[2], str) or not isinstance(msg[3], str) or not isinstance(msg[4], dict):
            raise FrameError(unique_id, "FormatViolation", "a CALLERROR is [4, id, code, description, {details}]",
                             answers=True)
        if deeper_than(raw, msg[4], MAX_DEPTH):
            raise FrameError(unique_id, "FormatViolation", f"errorDetails nested deeper than {MAX_DEPTH} levels",
                             answers=True)
        return CallError(unique_id, msg[2], msg[3], msg[4])
    raise FrameError(unique_id, "MessageTypeNotSupported", f"message type {type_id!r} is not 2, 3 or 4")


def deeper_than(raw: str | bytes, payload: Any, limit: int) -> bool:
    """Whether ``payload`` (parsed from ``raw``) nests more than ``limit`` levels of objects/arrays.

    Cheap for the usual frame: with at most ``limit`` brackets in all of it, it cannot be deeper.
    """
    opening = (raw.count("{") + raw.count("[")) if isinstance(raw, str) else (raw.count(b"{") + raw.count(b"["))
    if opening <= limit:
        return False
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _too_deep(raw: str | bytes) -> FrameError:
    """The answer to a frame the JSON parser gave up on for its depth: with the id when it is readable."""
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    m = _FRAME_START.match(text)
    unique_id = None
    if m is not None:
        try:
            unique_id = orjson.loads(m.group(2))
        except orjson.JSONDecodeError:
            unique_id = None
    if not isinstance(unique_id, str) or not 0 < len(unique_id) <= MAX_ID_LENGTH:
        return FrameError(UNKNOWN_ID, "RpcFrameworkError", "frame nested too deep to parse, and its message id "
                          "cannot be read")
    assert m is not None
    description = f"frame nested deeper than {MAX_DEPTH} levels"
    type_id = int(m.group(1))
    if type_id == CALL:
        return FrameError(unique_id, "FormatViolation", description)
    if type_id in (CALLRESULT, CALLERROR):
        return FrameError(unique_id, "FormatViolation", description, answers=True)
    return FrameError(unique_id, "MessageTypeNotSupported", f"message type {type_id!r} is not 2, 3 or 4")


def call_frame(unique_id: str, action: str, payload: dict[str, Any]) -> str:
    return orjson.dumps([CALL, unique_id, action, payload]).decode()


def result_frame(unique_id: str, payload: dict[str, Any]) -> str:
    return orjson.dumps([CALLRESULT, unique_id, payload]).decode()


def error_frame(unique_id: str, code: str, description: str, details: dict[str, Any] | None = None) -> str:
    # OCPP-J limits errorDescription to 255 characters.
    return orjson.dumps([CALLERROR, unique_id, code, description[:255], details or {}]).decode()

"""Station-initiated OCPP 2.0.1 messages, one module per functional block.

A handler is ``async def handler(conn, payload) -> response`` registered with ``@router.on("Action")``.
It receives the validated request exactly as on the wire (camelCase dict) and returns the response
payload; raising :class:`csms.protocol.errors.OcppError` answers with that CALLERROR. Everything a
handler stores is durable before it returns (the answer is sent after that).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from csms.connection import StationConnection

Handler = Callable[["StationConnection", dict[str, Any]], Awaitable[dict[str, Any]]]


class Router:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def on(self, action: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            if action in self._handlers:
                raise ValueError(f"two handlers for {action}")
            self._handlers[action] = fn
            return fn
        return register

    def handler(self, action: str) -> Handler | None:
        return self._handlers.get(action)

    @property
    def actions(self) -> frozenset[str]:
        return frozenset(self._handlers)


router = Router()

# Importing the modules registers their handlers.
from csms.handlers import (  # noqa: E402,F401
    authorization, certificates, device_model, notifications, provisioning, smart_charging, transactions,
)

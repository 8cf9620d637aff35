"""OCPP-J CALLERROR codes as one exception type.

The `ocpp` package has a class per code; we carry the code as data so a handler, the validator
and the transport raise and answer errors the same way, and so the code set of a later OCPP
version can be added without new classes.
"""

from __future__ import annotations

from typing import Any

# OCPP-J 2.0.1, section 4.2.3 (CallError error codes).
ERROR_CODES = frozenset({
    "FormatViolation", "GenericError", "InternalError", "MessageTypeNotSupported", "NotImplemented",
    "NotSupported", "OccurrenceConstraintViolation", "PropertyConstraintViolation", "ProtocolError",
    "RpcFrameworkError", "SecurityError", "TypeConstraintViolation",
})


class OcppError(Exception):
    """An error to answer with a CALLERROR (or one received in a CALLERROR)."""

    def __init__(self, code: str, description: str = "", details: dict[str, Any] | None = None) -> None:
        if code not in ERROR_CODES:
            details = {**(details or {}), "receivedCode": code}
            code = "GenericError"
        self.code = code
        self.description = description
        self.details = details or {}
        super().__init__(f"{code}: {description}")


class InvalidRequest(OcppError):
    """A CSMS-initiated request we refused to send: unknown action, or a payload that breaks its schema.

    It is an :class:`OcppError` (same code, description and ``details["field"]``) so callers that
    handle CALLERRORs handle it too; catch it first to tell "our request was wrong" from "the
    station answered with a CALLERROR".
    """


class CallTimeout(Exception):
    """The station did not answer a CSMS-initiated call within the response timeout."""


class StationOffline(Exception):
    """The station has no open connection to this daemon."""

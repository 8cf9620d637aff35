"""One websocket's OCPP-J framing for a simulated station, any version, on the `ocpp` package.

The package's `ChargePoint` gives us the frame parsing, the response queue, the call lock and the
JSON-schema validation of every version (1.6, 2.0.1, 2.1). Requests from the central system go
straight to the station's version layer as camelCase dicts (no snake_case round trip, no
dataclasses), so one link serves every version. A request without a handler gets the CALLERROR
the specification asks for (NotImplemented for an action of the version, NotSupported otherwise),
also for 2.1, where the package itself would stay silent.
"""

from __future__ import annotations

import decimal
import logging
import uuid
from typing import TYPE_CHECKING, Any

from ocpp.charge_point import ChargePoint
from ocpp.exceptions import (
    InternalError,
    NotImplementedError,
    NotSupportedError,
    OCPPError,
)
from ocpp.messages import Call, MessageType, validate_payload
from ocpp.v16.enums import Action as Action16
from ocpp.v21.enums import Action as Action21
from ocpp.v201.enums import Action as Action201

if TYPE_CHECKING:
    from simulators.station import SimStation

_ACTIONS: dict[str, Any] = {"1.6": Action16, "2.0.1": Action201, "2.1": Action21}


class OcppLink(ChargePoint):
    """Frames of one connection; `call_raw` for station-initiated calls."""

    def __init__(self, station: SimStation, connection: Any, response_timeout: float, logger: logging.Logger,
                 version: str) -> None:
        super().__init__(station.station_id, connection, response_timeout=response_timeout, logger=logger)
        self._ocpp_version = version
        self._station = station

    async def call_raw(self, action: str, payload: dict, timeout: float, validate: bool) -> dict:
        """A CALL with a camelCase payload dict; raises OCPPError on CALLERROR, TimeoutError on silence."""
        request = Call(unique_id=str(uuid.uuid4()), action=action, payload=payload)
        if validate:
            await validate_payload(request, self._ocpp_version)
        async with self._call_lock:
            await self._send(request.to_json())
            response = await self._get_specific_response(request.unique_id, timeout)
        if response.message_type_id == MessageType.CallError:
            raise response.to_exception()
        if validate:
            response.action = action
            await validate_payload(response, self._ocpp_version)
        return _plain(response.payload)

    async def _handle_call(self, msg: Any) -> None:
        """Validate, answer from the station's version layer, validate the answer, send it."""
        handler = self._station.core.dialect.handlers.get(msg.action)
        if handler is None:
            raise self._no_handler(msg.action)
        await validate_payload(msg, self._ocpp_version)
        self._station.stats.calls_received += 1
        try:
            answer = handler(_plain(msg.payload))
        except OCPPError:
            raise
        except Exception as exc:  # a bug or an input the schema let through: answer, never die
            self.logger.exception("%s: error handling %s", self.id, msg.action)
            raise InternalError(description=f"{type(exc).__name__} while handling {msg.action}") from exc
        response = msg.create_call_result(answer)
        await validate_payload(response, self._ocpp_version)
        await self._send(response.to_json())
        self._station.after_call(msg.action)

    def _no_handler(self, action: str) -> OCPPError:
        try:
            _ACTIONS[self._ocpp_version](action)
        except ValueError:
            return NotSupportedError(details={"cause": f"{action} is not an OCPP {self._ocpp_version} action"})
        return NotImplementedError(details={"cause": f"No handler for {action} registered."})


def _plain(value: Any) -> Any:
    """The package parses some 1.6 numbers as Decimal to check `multipleOf`; the station wants floats."""
    if isinstance(value, decimal.Decimal):
        return float(value)  # only JSON floats are parsed as Decimal: integers stay int
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value

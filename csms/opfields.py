"""One field-naming convention for ``csms send`` and ``csms call``: camelCase, as OCPP writes it.

``send`` posts to the typed command routes, whose bodies use snake_case at the top level
(``evse_id``); the command line takes the OCPP names (``evseId``) and turns them into the API's.
snake_case is accepted everywhere as an alias: ``call`` turns snake_case keys of its payload into
camelCase, except inside free-form values (DataTransfer ``data``, ``customData``), which go out as
written. Nested OCPP objects given to ``send`` (a charging profile, GetVariables items) keep their
OCPP (camelCase) names.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

FREE_FORM = frozenset({"data", "customData"})  # payload values whose keys are the sender's own


def snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def send_body(body: Any) -> Any:
    """A typed command's body: top-level camelCase keys become the API's snake_case."""
    if not isinstance(body, dict):
        return body
    return {snake(k): v for k, v in body.items()}


def call_payload(payload: Any) -> Any:
    """An OCPP payload: snake_case keys become camelCase, free-form values stay as written."""
    if isinstance(payload, list):
        return [call_payload(item) for item in payload]
    if not isinstance(payload, dict):
        return payload
    out = {}
    for k, v in payload.items():
        name = camel(k)
        out[name] = v if name in FREE_FORM else call_payload(v)
    return out


def command_help(commands: dict[str, Any], wanted: str) -> str:
    """The valid typed commands and their fields (camelCase, ``*`` = required), nearest match first."""
    typed: dict[str, Any] = commands.get("typed") or {}
    lines = []
    close = difflib.get_close_matches(wanted, list(typed), n=1)
    if close:
        lines.append(f"did you mean {close[0]!r}?")
    lines.append("valid commands and their fields (* = required; camelCase, snake_case also accepted):")
    width = max((len(n) for n in typed), default=0)
    for name in sorted(typed):
        body = typed[name].get("body") or {}
        required = set(body.get("required") or [])
        fields = [camel(f) + ("*" if f in required else "") for f in (body.get("properties") or {})]
        lines.append(f"  {name.ljust(width)}  {', '.join(fields) or '(no fields)'}")
    lines.append("any other OCPP action: csms call STATION ACTION '{...}'")
    return "\n".join(lines)

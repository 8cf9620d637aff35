"""Keep secrets out of records, traces and logs.

The only secret OCPP 2.0.1 carries in a payload the CSMS sends is the station's
``SecurityCtrlr.BasicAuthPassword`` (set with SetVariables when a password is rotated).
"""

from __future__ import annotations

import re
from typing import Any

SECRET_VARIABLES = frozenset({"BasicAuthPassword"})
REDACTED = "***"
_VALUE = re.compile(r'("attributeValue"\s*:\s*")((?:[^"\\]|\\.)*)(")')


def redact_payload(action: str, payload: dict[str, Any]) -> dict[str, Any]:
    if action != "SetVariables":
        return payload
    items = []
    for item in payload.get("setVariableData", []):
        if (item.get("variable") or {}).get("name") in SECRET_VARIABLES:
            item = {**item, "attributeValue": REDACTED}
        items.append(item)
    return {**payload, "setVariableData": items}


def redact_frame(frame: str) -> str:
    """Blank attribute values in a raw frame that mentions a secret variable."""
    if "Password" not in frame:
        return frame
    return _VALUE.sub(lambda m: m.group(1) + REDACTED + m.group(3), frame)

"""Integers every store can keep: the signed 64-bit range (SQLite's INTEGER; JSON in Redis).

JSON has no integer limit and the OCPP schemas set none on most integer fields, so a station may
send ``2^63`` or ``1e30`` as a connector id. The edge refuses those (the compiled schemas carry
these bounds, csms.protocol.schemas); the domain checks the integers it indexes once more, for
every writer. The range is symmetric, ``-(2^63 - 1)`` to ``2^63 - 1``: a JSON integer below
``-2^63`` is parsed as a double that rounds to exactly ``-2^63``, so that value cannot be told
from an overflow and is refused as well.
"""

from __future__ import annotations

INT_MAX = 2**63 - 1
INT_MIN = -INT_MAX


def int64(value: object, what: str) -> int:
    """``value`` as an int within +-(2^63 - 1) (``3.0`` becomes ``3``); ValueError naming ``what``."""
    if isinstance(value, float) and value.is_integer() and INT_MIN <= value <= INT_MAX:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer within +-(2^63 - 1), got {value!r}")
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"{what} {value} is outside +-(2^63 - 1), the range every store keeps")
    return value


def optional_int64(value: object, what: str) -> int | None:
    return None if value is None else int64(value, what)

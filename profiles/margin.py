"""The safety margin kept below every limit: meters are off by a percent or two and the non-EV load
is a forecast, so a plan that lands exactly on the limit overloads the transformer in practice.

The margin is a fixed part (kW) plus a part proportional to the limit (%); both the immediate cut and
every refined plan aim at ``limit - margin``. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

DEFAULT_MARGIN_KW = 0.0
DEFAULT_MARGIN_PERCENT = 3.0  # class 1-2 meters plus a base-load forecast error of about as much


def margin_kw(limit_kw: float, fixed_kw: float = DEFAULT_MARGIN_KW, percent: float = DEFAULT_MARGIN_PERCENT) -> float:
    """The margin below ``limit_kw``: ``fixed_kw`` plus ``percent`` of the limit (never of a negative one)."""
    for name, value in (("limit_kw", limit_kw), ("fixed_kw", fixed_kw), ("percent", percent)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if fixed_kw < 0 or not 0 <= percent < 100:
        raise ValueError(f"margin must be >= 0 kW and 0-100 %, got {fixed_kw} kW and {percent} %")
    return fixed_kw + percent / 100.0 * max(0.0, limit_kw)


def with_margin(limits_kw: Sequence[float], fixed_kw: float = DEFAULT_MARGIN_KW,
                percent: float = DEFAULT_MARGIN_PERCENT) -> list[float]:
    """What a plan may aim at in each slot: the limit minus its margin.

    Not clamped at zero: below a tiny limit the target turns negative, which a V2G car can meet by
    discharging and every other car meets by pausing.
    """
    return [kw - margin_kw(kw, fixed_kw, percent) for kw in limits_kw]

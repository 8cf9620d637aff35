"""The safety margin (profiles/margin.py): fixed kW plus a percentage of the limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profiles.margin import DEFAULT_MARGIN_PERCENT, margin_kw, with_margin


def test_fixed_and_percent_add_up() -> None:
    assert margin_kw(100.0, 1.0, 10.0) == pytest.approx(11.0)
    assert margin_kw(1104.0, 0.0, 3.0) == pytest.approx(33.12)
    assert with_margin([33.0, 0.0], 1.0, 10.0) == pytest.approx([28.7, -1.0])


def test_the_default_is_a_real_margin() -> None:
    assert DEFAULT_MARGIN_PERCENT >= 1.0
    assert margin_kw(1104.0) >= 11.04  # the cut landed on 1104.0 of 1104.0 kW


@pytest.mark.parametrize("args", [(100.0, -1.0, 0.0), (100.0, 0.0, 100.0), (100.0, 0.0, -1.0),
                                  (float("nan"), 0.0, 1.0), (100.0, float("inf"), 1.0)])
def test_nonsense_is_refused(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        margin_kw(*args)


@given(limit=st.floats(0, 1e6), fixed=st.floats(0, 1e3), percent=st.floats(0, 99))
def test_the_target_never_exceeds_the_limit_and_grows_with_it(limit: float, fixed: float, percent: float) -> None:
    target = with_margin([limit, limit + 1.0], fixed, percent)
    assert target[0] <= limit
    assert target[1] >= target[0]

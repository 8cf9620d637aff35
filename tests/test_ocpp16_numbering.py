"""The sequence numbers OCPP 1.6 messages get (1.6 has no seqNo), as properties of the pure
functions: below 2^53, ordered by timestamp, a retransmission finds its first copy, and different
messages never share a number however their checksums collide."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from csms.ocpp.v16.transactions import SEQ_LIMIT, place, seq_candidates, seq_for

instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2300, 1, 1), timezones=st.just(UTC))
messages = st.dictionaries(st.sampled_from(["connectorId", "transactionId", "value", "unit"]),
                           st.one_of(st.integers(-10**6, 10**6), st.text(max_size=8)), max_size=4)
kinds = st.sampled_from(["meter", "state", "end"])


def stamp(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@settings(max_examples=300, deadline=None)
@given(instants, kinds, messages)
def test_number_is_exact_as_a_double_and_the_same_for_a_retransmission(at: datetime, kind: str,
                                                                       message: dict[str, Any]) -> None:
    n = seq_for(stamp(at), kind, message)
    assert 0 < n < SEQ_LIMIT and float(n) == n
    assert seq_for(stamp(at), kind, dict(reversed(list(message.items())))) == n  # key order is not content


@settings(max_examples=200, deadline=None)
@given(instants, st.integers(1, 10**9), kinds, kinds, messages, messages)
def test_later_milliseconds_number_higher(at: datetime, later_ms: int, kind_a: str, kind_b: str,
                                          a: dict[str, Any], b: dict[str, Any]) -> None:
    if at < datetime(2020, 1, 1, tzinfo=UTC) or at > datetime(2159, 1, 1, tzinfo=UTC):
        return  # clamped there: the range the numbers cover
    later = at + timedelta(milliseconds=later_ms)
    assert seq_for(stamp(at), kind_a, a) < seq_for(stamp(later), kind_b, b)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.integers(1, 10**6), st.integers(SEQ_LIMIT - 10**4, SEQ_LIMIT - 1)), st.integers(1, 3000))
def test_candidates_are_distinct_of_one_kind_and_in_range(first: int, count: int) -> None:
    seen = []
    for n in seq_candidates(first):
        seen.append(n)
        if len(seen) == count:
            break
    assert seen[0] == first and len(set(seen)) == len(seen)
    assert all(0 < n < SEQ_LIMIT and n % 4 == first % 4 for n in seen)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([5, 9, 13, SEQ_LIMIT - 3]), st.integers(0, 6)), max_size=40))
def test_place_never_drops_a_different_message_and_stores_a_retransmission_once(
        arrivals: list[tuple[int, int]]) -> None:
    """Own numbers from a tiny set force collisions; message content k arrives (again) in any order."""
    stored: dict[int, object] = {}
    first_of: dict[int, int] = {}
    for first, content in arrivals:
        first = first_of.setdefault(content, first)  # a retransmission has the same own number
        n = place(first, {"k": content}, stored)
        if n is None:
            assert {"k": content} in stored.values()
        else:
            assert n not in stored and {"k": content} not in stored.values()
            stored[n] = {"k": content}
    assert sorted(c["k"] for c in stored.values()) == sorted(set(first_of))  # type: ignore[index]
    for content, first in first_of.items():
        assert place(first, {"k": content}, stored) is None

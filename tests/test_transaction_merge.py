"""The TransactionEvent merge rule (csms.domain.transactions.merge), the one both store backends
apply: whatever order a transaction's events arrive in, its record ends up the same."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from csms.domain.meter import Sample
from csms.domain.transactions import TxEvent, TxState, merge

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)


def event(seq: int, minute: int, event_type: str, *, state: str | None, energy: float | None,
          evse: int | None, token: str | None, reason: str | None) -> TxEvent:
    ts = (T0 + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
    samples = () if energy is None else (Sample(ts, evse, "TX", "Energy.Active.Import.Register", None, energy,
                                                "Wh", None, None),)
    return TxEvent.checked(transaction_id="TX", seq_no=seq, event_type=event_type, timestamp=ts, payload={},
                           samples=samples, evse_id=evse, id_token=token, charging_state=state, stopped_reason=reason)


@st.composite
def transactions(draw: st.DrawFn) -> list[TxEvent]:
    n = draw(st.integers(1, 8))
    events = []
    for seq in range(n):
        kind = "Started" if seq == 0 else "Ended" if seq == n - 1 and draw(st.booleans()) else "Updated"
        events.append(event(seq, seq * 5 + draw(st.integers(0, 4)), kind,
                            state=draw(st.sampled_from([None, "EVConnected", "Charging", "SuspendedEV"])),
                            energy=draw(st.one_of(st.none(), st.floats(0, 1e5, allow_nan=False))),
                            evse=draw(st.sampled_from([None, 1])), token=draw(st.sampled_from([None, "TOK"])),
                            reason=("Local" if kind == "Ended" else None)))
    return events


def fold(events: list[TxEvent]) -> TxState:
    state = None
    for ev in events:
        state = merge(state, ev)
    assert state is not None
    return state


@settings(max_examples=80, deadline=None)
@given(transactions(), st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_same_record_of_what_is_known(events: list[TxEvent], rnd: object) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    in_order, late = fold(events), fold(shuffled)
    assert late.started_at == min(events, key=lambda e: e.started_epoch).timestamp
    assert late.last_seq_no == in_order.last_seq_no == max(e.seq_no for e in events)
    assert late.active == in_order.active == (not any(e.ended for e in events))
    with_energy = [e for e in events if e.energy_wh is not None]
    with_state = [e for e in events if e.charging_state is not None]
    # In order: the newest reading and state; in any order, the newest event's own values win
    # (a late, offline-queued event never overwrites what a newer one said).
    assert in_order.energy_wh == (max(with_energy, key=lambda e: e.seq_no).energy_wh if with_energy else None)
    assert in_order.charging_state == (max(with_state, key=lambda e: e.seq_no).charging_state if with_state else None)
    newest = max(events, key=lambda e: e.seq_no)
    if newest.energy_wh is not None:
        assert late.energy_wh == newest.energy_wh
    if newest.charging_state is not None:
        assert late.charging_state == newest.charging_state
    assert late.energy_wh in {e.energy_wh for e in events}
    assert (late.evse_id is None) == all(e.evse_id is None for e in events)
    assert (late.id_token is None) == all(e.id_token is None for e in events)
    assert late.first_seen_as == shuffled[0].event_type


def test_a_transaction_first_seen_in_the_middle_is_still_recorded() -> None:
    state = merge(None, event(3, 15, "Updated", state="Charging", energy=500.0, evse=1, token=None, reason=None))
    assert (state.first_seen_as, state.active, state.last_seq_no, state.energy_wh) == ("Updated", True, 3, 500.0)
    state = merge(state, event(1, 5, "Updated", state="EVConnected", energy=100.0, evse=None, token="TOK", reason=None))
    assert (state.charging_state, state.energy_wh, state.id_token, state.last_seq_no) == ("Charging", 500.0, "TOK", 3)
    assert state.started_at.startswith("2024-03-01T08:05")  # the earlier event moves the start back

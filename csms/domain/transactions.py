"""Transactions, version-neutral: one event as every OCPP version maps onto it, and THE merge rule
that folds events into a transaction's record (one implementation, shared by every store backend).

Events arrive out of order (offline queues), twice (retransmissions; the store refuses a
(station, transaction, seqNo) it already has) or without their start (a reconnect): the rule
takes the start from the ``Started`` event (or, until one arrives, from the lowest seqNo seen, not
from whichever timestamp looks earliest: an offline event may carry a clock's glitch), the latest
charging state and energy reading by sequence number, keeps the first ``Ended`` for good (a second
one, with another seqNo, changes nothing of it), and never forgets a value once known. Energy is in
Wh whatever unit the meter value was in; instants are compared as instants.

Both energy registers are kept (:class:`Registers`): import and export, each at the lowest and
the highest seqNo that carried it, so the transaction's net energy (import minus export, what a
V2G car really took) is the same whatever order its events arrived in. A record stored before
the export register was kept reads as "no export" (0 Wh exported).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from csms.domain.datetimes import BadDateTime, normalise, parse
from csms.domain.meter import DEFAULT_MEASURAND, EXPORT_REGISTER, Sample, in_base_unit
from csms.domain.values import int64, optional_int64

EVENT_TYPES = ("Started", "Updated", "Ended")


def epoch(ts: Any, what: str) -> float:
    """Seconds since the epoch of an OCPP date-time (no offset = UTC); ValueError names ``what``."""
    try:
        return parse(ts).timestamp()
    except BadDateTime as exc:
        raise ValueError(f"{what}: {exc}") from None


@dataclass(frozen=True)
class TxEvent:
    """One transaction event; :meth:`checked` validates it once, for every backend."""

    transaction_id: str
    seq_no: int
    event_type: str  # Started | Updated | Ended
    timestamp: str  # canonical (csms.domain.datetimes): T and Z upper case, +hh:mm, no leap second
    started_epoch: float  # the timestamp as seconds since the epoch
    payload: dict[str, Any]  # the message as it arrived (stored as it is)
    samples: tuple[Sample, ...] = ()
    trigger_reason: str | None = None
    evse_id: int | None = None
    connector_id: int | None = None
    id_token: str | None = None
    charging_state: str | None = None
    stopped_reason: str | None = None
    offline: bool = False

    @classmethod
    def checked(cls, *, transaction_id: Any, seq_no: Any, event_type: Any, timestamp: Any, payload: dict[str, Any],
                samples: Sequence[Sample] = (), **rest: Any) -> TxEvent:
        """The event, or ValueError naming what cannot be stored (the same for every backend).

        Its date-time is kept in canonical form, also in the stored payload; integers the stores
        index must fit 64 bits (an integral float such as ``3.0`` becomes ``3``).
        """
        if not isinstance(transaction_id, str) or not transaction_id:
            raise ValueError(f"TransactionEvent without transactionInfo.transactionId: {transaction_id!r}")
        seq = int64(seq_no, "TransactionEvent seqNo")
        if seq < 0:
            raise ValueError(f"TransactionEvent seqNo must be an integer >= 0, got {seq_no!r}")
        if event_type not in EVENT_TYPES:
            raise ValueError(f"TransactionEvent eventType must be one of {', '.join(EVENT_TYPES)}, got {event_type!r}")
        try:
            stamp = normalise(timestamp)
        except BadDateTime as exc:
            raise ValueError(f"TransactionEvent timestamp: {exc}") from None
        for key in ("evse_id", "connector_id"):
            rest[key] = optional_int64(rest.get(key), f"TransactionEvent {key}")
        if stamp != timestamp:
            payload = {**payload, "timestamp": stamp}
        return cls(transaction_id=transaction_id, seq_no=seq, event_type=event_type, timestamp=stamp,
                   started_epoch=parse(stamp).timestamp(), payload=payload, samples=tuple(samples), **rest)

    @property
    def ended(self) -> bool:
        return self.event_type == "Ended"

    @property
    def energy_wh(self) -> float | None:
        """The last Energy.Active.Import.Register (no phase) the event carries, in Wh."""
        return self.register_wh(DEFAULT_MEASURAND)

    @property
    def export_wh(self) -> float | None:
        """The last Energy.Active.Export.Register (no phase) the event carries, in Wh."""
        return self.register_wh(EXPORT_REGISTER)

    def register_wh(self, measurand: str) -> float | None:
        energy = [s for s in self.samples if s.measurand == measurand and s.phase is None]
        if not energy:
            return None
        last = max(energy, key=lambda s: epoch(s.timestamp, "meter value timestamp"))
        return in_base_unit(last.value, last.unit)


Mark = tuple[int, float]  # (seqNo, Wh): a register's value and the event it came in


def _earlier(mark: Mark | None, seq: int, wh: float | None) -> Mark | None:
    return mark if wh is None or (mark is not None and mark[0] <= seq) else (seq, wh)


def _later(mark: Mark | None, seq: int, wh: float | None) -> Mark | None:
    return mark if wh is None or (mark is not None and mark[0] >= seq) else (seq, wh)


def _mark(value: Any) -> Mark | None:
    """A stored mark, or None when absent or damaged (a reader never breaks on a stored record)."""
    if (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], int)
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool)):
        return int(value[0]), float(value[1])
    return None


@dataclass(frozen=True)
class Registers:
    """Both energy registers of a transaction, each at the first and the last seqNo that carried it.

    Order-free: folding the same events in any order gives the same marks, so the net energy is
    what the meter says whatever order the events arrived in (duplicates are refused by the store).
    """

    import_first: Mark | None = None
    import_last: Mark | None = None
    export_first: Mark | None = None
    export_last: Mark | None = None

    def fold(self, seq: int, import_wh: float | None, export_wh: float | None) -> Registers:
        return Registers(_earlier(self.import_first, seq, import_wh), _later(self.import_last, seq, import_wh),
                         _earlier(self.export_first, seq, export_wh), _later(self.export_last, seq, export_wh))

    @property
    def imported_wh(self) -> float:
        """Import counted over the transaction (from its first reading to its last)."""
        return 0.0 if self.import_first is None or self.import_last is None else \
            self.import_last[1] - self.import_first[1]

    @property
    def exported_wh(self) -> float:
        """Export counted over the transaction; 0 when the station never sent the export register."""
        return 0.0 if self.export_first is None or self.export_last is None else \
            self.export_last[1] - self.export_first[1]

    @property
    def export_register_wh(self) -> float:
        """The last export register seen; 0 when none was (a charge-only car, a record from before)."""
        return 0.0 if self.export_last is None else self.export_last[1]

    @property
    def net_wh(self) -> float | None:
        """Import minus export over the transaction; None before any import reading."""
        return None if self.import_last is None else self.imported_wh - self.exported_wh

    def record(self) -> dict[str, Any]:
        return {name: list(mark) for name, mark in (("import_first", self.import_first),
                                                     ("import_last", self.import_last),
                                                     ("export_first", self.export_first),
                                                     ("export_last", self.export_last)) if mark is not None}

    @classmethod
    def from_record(cls, record: Any) -> Registers:
        """What :meth:`record` wrote; anything else (absent: a record from before) reads as none."""
        if not isinstance(record, dict):
            return cls()
        return cls(*(_mark(record.get(name)) for name in ("import_first", "import_last", "export_first",
                                                            "export_last")))


@dataclass(frozen=True)
class TxState:
    """What the store keeps about one transaction (besides its events)."""

    started_at: str  # the Started event's timestamp (else the lowest seqNo's), as the station wrote it
    started_epoch: float
    last_seq_no: int
    active: bool
    first_seen_as: str  # Started | Updated | Ended (Updated: we missed its start)
    evse_id: int | None = None
    connector_id: int | None = None
    id_token: str | None = None
    ended_at: str | None = None
    charging_state: str | None = None
    stopped_reason: str | None = None
    energy_wh: float | None = None
    started_seq_no: int | None = None  # the seqNo of the event started_at came from (None: unknown, old record)
    started_by: str | None = None  # its eventType
    registers: Registers = Registers()  # both energy registers, first and last (empty: an old record)

    @property
    def export_wh(self) -> float:
        """The last export register seen (Wh); 0 when none was (a charge-only car, an old record)."""
        return self.registers.export_register_wh


def _better_start(state: TxState, event: TxEvent) -> bool:
    """Does ``event`` say when the transaction started better than the event ``state`` took it from?
    A Started event before any other, then the lowest seqNo. A record from before this rule (origin
    unknown) yields to a Started event, else to an earlier instant."""
    if state.started_seq_no is None or state.started_by is None:
        return event.event_type == "Started" or event.started_epoch < state.started_epoch
    return (event.event_type != "Started", event.seq_no) < (state.started_by != "Started", state.started_seq_no)


def merge(state: TxState | None, event: TxEvent) -> TxState:
    """The transaction's record after ``event`` (an event not stored before)."""
    energy = event.energy_wh
    if state is None:
        return TxState(started_at=event.timestamp, started_epoch=event.started_epoch, last_seq_no=event.seq_no,
                       active=not event.ended, first_seen_as=event.event_type, evse_id=event.evse_id,
                       connector_id=event.connector_id, id_token=event.id_token,
                       ended_at=event.timestamp if event.ended else None, charging_state=event.charging_state,
                       stopped_reason=event.stopped_reason, energy_wh=energy, started_seq_no=event.seq_no,
                       started_by=event.event_type, registers=Registers().fold(event.seq_no, energy, event.export_wh))
    newer = event.seq_no >= state.last_seq_no  # a late (offline-queued) event must not overwrite fresher values
    start = _better_start(state, event)
    repeat_end = event.ended and state.ended_at is not None  # a second Ended: the first one stands
    fresh = newer and not repeat_end
    return TxState(
        started_at=event.timestamp if start else state.started_at,
        started_epoch=event.started_epoch if start else state.started_epoch,
        last_seq_no=max(event.seq_no, state.last_seq_no),
        active=False if event.ended else state.active,
        first_seen_as=state.first_seen_as,
        evse_id=state.evse_id if state.evse_id is not None else event.evse_id,
        connector_id=state.connector_id if state.connector_id is not None else event.connector_id,
        id_token=event.id_token if event.id_token is not None else state.id_token,
        ended_at=state.ended_at if state.ended_at is not None else (event.timestamp if event.ended else None),
        charging_state=event.charging_state if fresh and event.charging_state is not None else state.charging_state,
        stopped_reason=state.stopped_reason if repeat_end or event.stopped_reason is None else event.stopped_reason,
        energy_wh=energy if fresh and energy is not None else state.energy_wh,
        started_seq_no=event.seq_no if start else state.started_seq_no,
        started_by=event.event_type if start else state.started_by,
        registers=state.registers if repeat_end else state.registers.fold(event.seq_no, energy, event.export_wh),
    )

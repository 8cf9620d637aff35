"""Tariffs and the cost of sessions (OCPP 2.0.1 block I): the running cost while charging
(CostUpdated), the final total in the TransactionEvent(Ended) answer, the driver's tariff in
IdTokenInfo.personalMessage, and the plans the operator adds through the API.

The prices are csms/domain/tariffs.py's; this part reads what a transaction's events said (their
timestamps, charging states and energy register readings, as stored) and keeps each session's
cost as a document, so the API shows it and a restart loses nothing.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from csms.domain.meter import flatten
from csms.domain.tariffs import (
    Cost,
    Reading,
    TariffError,
    TariffPlan,
    Tariffs,
    check_groups,
    parse_plan,
    session_cost,
    tariff_message,
)
from csms.interfaces import StationSession
from csms.store.base import DocumentStore, IdTokenStore, TransactionStore

log = logging.getLogger("csms.billing")
Payload = dict[str, Any]
PLANS = "tariffs"
ENERGY = "Energy.Active.Import.Register"


def cost_scope(station_id: str) -> str:
    return f"cost:{station_id}"


def readings(events: list[Payload]) -> list[Reading]:
    """What each stored TransactionEvent said: its time, charging state and energy register (Wh)."""
    out = []
    for event in events:
        at = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
        energy = None
        try:
            samples = flatten(event.get("meterValue", []), None, None)
        except ValueError:
            samples = []
        registers = [s for s in samples if s.measurand == ENERGY and s.phase is None]
        if registers:
            last = registers[-1]
            energy = last.value * 1000.0 if last.unit == "kWh" else last.value
        out.append(Reading(at, energy, (event.get("transactionInfo") or {}).get("chargingState")))
    return out


class Billing:
    """The :class:`csms.ocpp.package.Billing` of the daemon, and the tariff plans of the API."""

    def __init__(self, configured: Tariffs | None, documents: DocumentStore, transactions: TransactionStore,
                 tokens: IdTokenStore) -> None:
        self.configured = configured
        self.documents = documents
        self.transactions = transactions
        self.tokens = tokens
        self._last_update: dict[tuple[str, str], float] = {}
        self._stored: list[TariffPlan] | None = None  # the operator's plans, read once (this process writes them)

    async def tariffs(self) -> Tariffs | None:
        """The configured plans with the operator's (API) plans added or replacing them by name."""
        if self._stored is None:
            self._stored = [parse_plan(name, {k: v for k, v in doc.items() if k != "name"})
                            for name, doc in await self.documents.list_documents(PLANS)]
        if self.configured is None and not self._stored:
            return None
        return (self.configured or Tariffs()).with_plans(self._stored)

    async def put_plan(self, body: Payload) -> tuple[TariffPlan, bool]:
        """Add or replace an operator plan; TariffError naming the field."""
        name = body.get("name")
        plan = parse_plan(name, {k: v for k, v in body.items() if k != "name"})
        current = await self.tariffs()
        check_groups([*(p for p in (current.plans.values() if current else []) if p.name != plan.name), plan], "plans")
        new = await self.documents.get_document(PLANS, plan.name) is None
        await self.documents.put_document(PLANS, plan.name, plan.to_json())
        self._stored = None
        return plan, new

    async def delete_plan(self, name: str) -> bool:
        if self.configured is not None and name in self.configured.plans:
            raise TariffError("name", f"plan {name!r} comes from the config file; change it there")
        removed = await self.documents.delete_document(PLANS, name)
        self._stored = None
        return removed

    async def _plan(self, group_id: str | None) -> tuple[Tariffs, TariffPlan] | None:
        tariffs = await self.tariffs()
        plan = tariffs.plan_for(group_id) if tariffs is not None else None
        return (tariffs, plan) if tariffs is not None and plan is not None else None

    async def tariff_message(self, group_id: str | None) -> Payload | None:
        found = await self._plan(group_id)
        if found is None:
            return None
        tariffs, plan = found
        return {"format": "UTF8", "content": tariff_message(plan, tariffs.currency)}

    async def _group(self, station_id: str, transaction_id: str) -> str | None:
        record = await self.transactions.get_transaction(station_id, transaction_id)
        token = await self.tokens.get_id_token(record.id_token) if record is not None and record.id_token else None
        return token.group_id if token is not None else None

    async def cost(self, station_id: str, transaction_id: str, final: bool) -> Cost | None:
        if await self.tariffs() is None:  # the usual case without tariffs: no store reads per event
            return None
        found = await self._plan(await self._group(station_id, transaction_id))
        if found is None:
            return None
        tariffs, plan = found
        events = await self.transactions.transaction_events(station_id, transaction_id)
        cost = session_cost(plan, readings(events), currency=tariffs.currency, final=final)
        await self.documents.put_document(cost_scope(station_id), transaction_id, cost.to_json())
        return cost

    async def transaction_event(self, session: StationSession, payload: Payload, group_id: str | None) -> float | None:
        station_id = session.station_id
        transaction_id = payload["transactionInfo"]["transactionId"]
        ended = payload["eventType"] == "Ended"
        cost = await self.cost(station_id, transaction_id, final=ended)
        if cost is None:
            return None
        if ended:
            self._last_update.pop((station_id, transaction_id), None)
            return float(cost.total)
        if payload["eventType"] == "Updated" and payload.get("meterValue"):
            await self._running_cost(session, transaction_id, cost)
        return None

    async def _running_cost(self, session: StationSession, transaction_id: str, cost: Cost) -> None:
        """I02.FR.01: CostUpdated at most every cost_update_interval_s, after the answer is sent."""
        tariffs = await self.tariffs()
        interval = tariffs.cost_update_interval_s if tariffs is not None else 60.0
        key = (session.station_id, transaction_id)
        now = time.monotonic()
        if interval > 0 and now - self._last_update.get(key, -1e18) < interval:
            return
        self._last_update[key] = now
        total = float(cost.total)

        async def send() -> None:
            await session.call("CostUpdated", {"totalCost": total, "transactionId": transaction_id})
        session.after(send)

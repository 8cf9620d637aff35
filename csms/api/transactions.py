"""Transactions and their meter values: list with filters, detail with energy and power series."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from aiohttp import web

from csms.api.http import ApiError, Routes, context_of, iso, json_response, query_bool, query_int, query_time
from csms.domain.meter import in_base_unit
from csms.domain.records import TransactionRecord
from csms.domain.transactions import epoch

routes = Routes()


def transaction_summary(t: TransactionRecord) -> dict[str, Any]:
    return {"station_id": t.station_id, "transaction_id": t.transaction_id, "evse_id": t.evse_id,
            "connector_id": t.connector_id, "id_token": t.id_token, "started_at": iso(t.started_at),
            "ended_at": iso(t.ended_at), "active": t.active, "charging_state": t.charging_state,
            "stopped_reason": t.stopped_reason, "energy_wh": t.energy_wh, "export_wh": t.export_wh,
            "net_energy_wh": t.net_energy_wh}


def series(samples: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Energy (Wh) and net power (W, import minus export; phases summed when no total) per timestamp."""
    energy: list[dict[str, Any]] = []
    power: dict[str, dict[str, float]] = defaultdict(dict)
    for s in samples:
        m, ts, phase = s["measurand"], s["timestamp"], s.get("phase")
        if m == "Energy.Active.Import.Register" and phase is None:
            energy.append({"timestamp": ts, "energy_wh": in_base_unit(s["value"], s.get("unit"))})
        elif m in ("Power.Active.Import", "Power.Active.Export"):
            sign = 1.0 if m.endswith("Import") else -1.0
            key = f"{m}|{phase or ''}"
            power[ts][key] = sign * in_base_unit(s["value"], s.get("unit"))
    power_series = []
    for ts in sorted(power):
        parts = power[ts]
        total = 0.0
        for m in ("Power.Active.Import", "Power.Active.Export"):
            whole = parts.get(f"{m}|")
            total += whole if whole is not None else sum(v for k, v in parts.items() if k.startswith(m + "|"))
        power_series.append({"timestamp": ts, "power_w": total})
    return energy, power_series


@routes.get("/api/transactions")
async def list_transactions(request: web.Request) -> web.Response:
    context = context_of(request)
    since, until = query_time(request, "since"), query_time(request, "until")
    if since is not None and until is not None and since > until:
        raise ApiError(400, "'since' is after 'until'", field="since")
    limit = query_int(request, "limit", 100, 1, 10000)
    station_id = request.query.get("station_id") or None
    records = await context.store.list_transactions(station_id=station_id, active=query_bool(request, "active"),
                                                   since=since, until=until, limit=limit or 100)
    return json_response({"transactions": [transaction_summary(t) for t in records]})


@routes.get("/api/transactions/{station_id}/{transaction_id}")
async def transaction_detail(request: web.Request) -> web.Response:
    context = context_of(request)
    station_id, tx_id = request.match_info["station_id"], request.match_info["transaction_id"]
    t = await context.store.get_transaction(station_id, tx_id)
    if t is None:
        raise ApiError(404, f"station {station_id!r} has no transaction {tx_id!r}")
    out = transaction_summary(t)
    out["events"] = await context.store.transaction_events(station_id, tx_id)
    samples = await context.store.meter_samples(station_id, transaction_id=tx_id)
    if t.evse_id is not None and t.started_at is not None:
        # MeterValues messages carry no transaction id: take the EVSE's samples during the session.
        end = None if t.ended_at is None else t.ended_at.timestamp()
        samples += [s for s in await context.store.meter_samples(station_id, evse_id=t.evse_id, since=t.started_at)
                    if s["transaction_id"] is None and (end is None or epoch(s["timestamp"], "sample") <= end)]
        samples.sort(key=lambda s: epoch(s["timestamp"], "sample"))  # instants, not text (Z vs +02:00)
    out["energy_series"], out["power_series"] = series(samples)
    out["cost"] = await context.store.get_document(f"cost:{station_id}", tx_id)
    return json_response(out)

"""What ``csms show`` and ``csms transactions`` print: a station's boot info, connectors, active
transaction, the charging profiles pushed to it (and the station's composite schedule when it can
tell), its device model; transactions as a table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape

from csms.clitables import Col, print_table

TX_COLS = (Col("station", whole=True), Col("transaction", whole=True), Col("EVSE"), Col("id token"),
           Col("started"), Col("ended"), Col("kWh"), Col("stopped reason"))
ACTIVE_COLS = (Col("transaction", whole=True), Col("EVSE"), Col("id token"), Col("started"), Col("kWh"),
               Col("state"))


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def when(value: str | None) -> str:
    """'30 Nov 16:00:05' (UTC offset kept when not UTC): readable, and still exact to the second."""
    if not value:
        return "-"
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    offset = dt.utcoffset()
    zone = "" if offset is None or not offset else dt.strftime(" %z")
    return dt.strftime("%d %b %H:%M:%S") + zone


def transaction_rows(transactions: list[dict[str, Any]]) -> list[list[str]]:
    return [[t["station_id"], t["transaction_id"], fmt(t.get("evse_id")), fmt(t.get("id_token")),
             when(t.get("started_at")), "running" if t.get("active") else when(t.get("ended_at")), _kwh(t),
             fmt(t.get("stopped_reason"))]
            for t in transactions]


def _kwh(t: dict[str, Any]) -> str:
    return "-" if t.get("energy_wh") is None else f"{t['energy_wh'] / 1000:.2f}"


def active_rows(transactions: list[dict[str, Any]]) -> list[list[str]]:
    return [[t["transaction_id"], fmt(t.get("evse_id")), fmt(t.get("id_token")), when(t.get("started_at")), _kwh(t),
             fmt(t.get("charging_state"))] for t in transactions]


def schedule_text(periods: list[dict[str, Any]], unit: str | None, most: int = 4) -> str:
    """'0 s: 16.0 A, 900 s: 6.0 A (+3 more)'."""
    shown = [f"{p.get('startPeriod', 0)} s: {fmt(float(p.get('limit', 0)))} {unit or ''}".rstrip()
             for p in periods[:most]]
    more = len(periods) - most
    return ", ".join(shown) + (f" (+{more} more)" if more > 0 else "") if shown else "-"


def _profile_schedule(profile: dict[str, Any]) -> str:
    schedules = profile.get("chargingSchedule")
    schedule = schedules[0] if isinstance(schedules, list) and schedules else schedules
    if not isinstance(schedule, dict):
        return "-"
    return schedule_text(schedule.get("chargingSchedulePeriod") or [], schedule.get("chargingRateUnit"))


def profile_rows(profiles: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for p in profiles:
        raw = p.get("profile")
        body: dict[str, Any] = raw if isinstance(raw, dict) else {}
        info = p.get("status_info") or {}
        status = fmt(p.get("status")) + (f" ({info.get('reasonCode')})" if isinstance(info, dict)
                                         and info.get("reasonCode") else "")
        rows.append([fmt(p.get("profile_id")), fmt(p.get("evse_id")), fmt(p.get("purpose")), fmt(p.get("stack_level")),
                     fmt(p.get("transaction_id")), status, when(p.get("sent_at")), _profile_schedule(body)])
    return rows


PROFILE_COLS = (Col("id", whole=True), Col("EVSE"), Col("purpose"), Col("stack"), Col("transaction", whole=True),
                Col("status"), Col("sent"), Col("schedule"))


def render_station(out: Console, s: dict[str, Any], active: list[dict[str, Any]],
                   composites: dict[int, str]) -> None:
    out.print(f"[bold]{escape(s['station_id'])}[/]  {'[green]connected[/]' if s['connected'] else '[red]offline[/]'}"
              f"  OCPP {escape(fmt(s.get('ocpp_version')))}  registration {escape(str(s['registration']))}"
              f"  security profile {s['security_profile']}")
    out.print(escape(f"{fmt(s['vendor'])} {fmt(s['model'])}, firmware {fmt(s['firmware_version'])}, serial "
                     f"{fmt(s['serial_number'])}; last boot {when(s['last_boot'])} ({fmt(s['boot_reason'])}), "
                     f"last seen {when(s['last_seen'])}"))
    out.print()
    rows = [[str(e["evse_id"]), str(c["connector_id"]), fmt(c["status"]), when(c["updated_at"])]
            for e in s["evses"] for c in e["connectors"]]
    print_table(out, "EVSEs and connectors", (Col("EVSE"), Col("connector"), Col("status"), Col("since")), rows)
    out.print()
    if active:
        print_table(out, "active transaction" + "s" * (len(active) != 1), ACTIVE_COLS, active_rows(active))
    else:
        out.print("active transaction: none")
    out.print()
    profiles = s.get("charging_profiles") or []
    if profiles:
        print_table(out, f"charging profiles pushed ({len(profiles)})", PROFILE_COLS, profile_rows(profiles))
    else:
        out.print("charging profiles pushed: none")
    for evse_id, text in sorted(composites.items()):
        out.print(escape(f"composite schedule EVSE {evse_id}: {text}"))
    if s["variables"]:
        out.print()
        rows = [[fmt(v.get("component")), fmt(v.get("variable")), fmt(v.get("value"))] for v in s["variables"]]
        print_table(out, "device model", (Col("component"), Col("variable"), Col("value")), rows)


def composite_text(response: dict[str, Any]) -> str:
    """A GetCompositeSchedule answer in one line."""
    if response.get("status") != "Accepted":
        info = response.get("statusInfo") or {}
        return f"not given ({response.get('status')}{': ' + str(info.get('reasonCode')) if info else ''})"
    schedule = response.get("schedule") or response.get("chargingSchedule") or {}
    start = schedule.get("scheduleStart")
    periods = schedule.get("chargingSchedulePeriod") or []
    return (schedule_text(periods, schedule.get("chargingRateUnit"))
            + (f" from {when(start)}" if start else "") + f" for {schedule.get('duration', '?')} s")

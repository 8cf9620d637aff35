"""``csms grid`` without ``--json``: everything an operator must see at a glance, per transformer.

The limit in force and who set it, the margin kept below it, safe mode, whether the plan is
feasible, over-draw (measured load above the limit) and every session the controller cannot
steer, with the reason in words.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from csms.clitables import Col, print_table
from csms.opshow import when

SESSION_COLS = (Col("station", whole=True), Col("EVSE", whole=True), Col("state"), Col("set kW", whole=True),
                Col("kW", whole=True), Col("kWh", whole=True), Col("need", whole=True), Col("departs"),
                Col("control"))  # kW: measured draw; kWh: delivered; need: kWh wanted


def kw(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}"


def human_reason(session: dict[str, Any]) -> str | None:
    """Why the controller cannot steer this session, in words (None when it can)."""
    reason = session.get("fixed_reason")
    if session.get("fixed_kw") is None and not reason:
        return None
    text = str(reason or "")
    if text.startswith("profile "):
        status, _, detail = text[len("profile "):].partition(" ")
        detail = detail.strip().strip("()")
        if status == "Rejected":
            said = f"profile rejected by station{f' ({detail})' if detail else ''}"
        else:
            said = f"profile rejected by station ({status}{f': {detail}' if detail else ''})"
    elif text.startswith("draws "):
        said = f"ignores its setpoint: {text}"
    else:
        said = text or "not controllable"
    return f"{said}; budgeted at {kw(session.get('fixed_kw'))} kW"


def control_note(session: dict[str, Any]) -> str:
    """Short state of control for the sessions table."""
    notes = []
    if session.get("fixed_kw") is not None or session.get("fixed_reason"):
        notes.append("UNCONTROLLED")
    elif session.get("push_status") not in (None, "Accepted"):
        notes.append(f"push {session['push_status']}")
    if session.get("can_pause") is False:
        notes.append("no pause")
    if session.get("connected") is False:
        notes.append("offline")
    return ", ".join(notes) or "ok"


def _departure(value: str | None) -> str:
    if not value:
        return "-"
    from datetime import datetime

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%d %b %H:%M")
    except ValueError:
        return value


def source_text(source: str) -> str:
    """'signal:operator:cli-1' -> 'operator (signal cli-1)'; 'contract:evening' -> 'contract evening'."""
    kind, _, rest = source.partition(":")
    if kind == "signal" and rest:
        who, _, signal_id = rest.partition(":")
        return f"{who} (signal {signal_id})" if signal_id else who
    if kind == "contract" and rest:
        return f"contract {rest}"
    return {"capacity": "transformer capacity", "safe_mode": "safe mode"}.get(source, source)


def render_group(out: Console, g: dict[str, Any]) -> None:
    limit = g.get("limit_kw")
    measured = g.get("measured_kw")
    flags = []
    if g.get("safe_mode"):
        flags.append("[bold red]SAFE MODE[/]")
    if g.get("infeasible"):
        flags.append("[bold red]INFEASIBLE[/]")
    over = None if limit is None or measured is None else float(measured) - float(limit)
    if over is not None and over > 0:
        flags.append("[bold red]OVER-DRAW[/]")
    source = escape(source_text(str(g["limit_source"])))
    out.print(f"[bold]{escape(g['transformer'])}[/]: limit {kw(limit)} kW, set by {source}"
              + (f"  {' '.join(flags)}" if flags else ""))
    margin = g.get("margin") or {}
    out.print(f"  margin     {kw(g.get('margin_kw'))} kW kept below the limit "
              f"(configured {kw(margin.get('kw'))} kW / {kw(margin.get('percent'))} %)")
    out.print(f"  measured   {kw(measured)} kW = EV {kw(g.get('measured_ev_kw'))} + non-EV "
              f"{kw(g.get('base_load_kw'))} kW")
    out.print(f"  planned    {kw(g.get('planned_kw'))} kW = EV {kw(g.get('planned_ev_kw'))} + non-EV "
              f"{kw(g.get('base_load_kw'))} kW" + (f" (planned {escape(when(g['planned_at']))})"
                                                     if g.get("planned_at") else ""))
    if g.get("safe_mode"):
        out.print("  [red]safe mode:[/] no live limit signal (source silent or broker down); the safe limit applies")
    if over is not None and over > 0:
        out.print(f"  [red]over-draw:[/] measured load is {over:.1f} kW above the limit")
    if g.get("infeasible"):
        out.print("  [red]infeasible:[/] the limit cannot be kept now, even with every car paused or discharging "
                  f"(non-EV load {kw(g.get('base_load_kw'))} kW, margin {kw(g.get('margin_kw'))} kW)")
    sessions = g.get("sessions") or []
    stuck = [(s, human_reason(s)) for s in sessions]
    stuck = [(s, r) for s, r in stuck if r]
    if stuck:
        out.print(f"  [red]uncontrollable:[/] {len(stuck)} session{'s' * (len(stuck) != 1)}")
        for s, reason in stuck:
            out.print(f"    {escape(s['station_id'])} EVSE {s['evse_id']}: {escape(reason or '')}")
    for s in sessions:
        if s.get("can_pause") is False and s.get("no_pause_reason"):
            out.print(f"  cannot pause {escape(s['station_id'])} EVSE {s['evse_id']}: "
                      f"{escape(str(s['no_pause_reason']))}")
    rows = [[s["station_id"], str(s["evse_id"]), str(s["state"]), kw(s.get("setpoint_kw")), kw(s.get("actual_kw")),
             kw(s.get("delivered_kwh")), kw(s.get("need_kwh")), _departure(s.get("departure")), control_note(s)]
            for s in sessions]
    n = len(sessions)
    print_table(out, f"{g['transformer']}: {n} session{'s' * (n != 1)}", SESSION_COLS, rows)


def render_grid(out: Console, data: dict[str, Any]) -> None:
    controller = data.get("controller")
    if isinstance(controller, dict):  # several nodes: who runs the grid controller now
        out.print(f"controller: node {escape(str(controller.get('node')))} (fencing epoch {controller.get('epoch')})")
    groups = list(data["transformers"].values())
    for i, g in enumerate(groups):
        if i:
            out.print()
        render_group(out, g)

"""The report as a directory: ``index.html`` and its PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402 - after choosing the backend
import matplotlib.pyplot as plt  # noqa: E402

from csms.report.collect import Report, TransformerReport  # noqa: E402

MAX_ROWS = 200
SESSION_BARS = 40
COLORS = {"ev": "#1f77d0", "non_ev": "#9aa7b4", "limit": "#d43d3d", "over": "#e0312f", "late": "#f2a3a3",
          "mean": "#14324f"}


def write(report: Report, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    sections = [_section(report, t, out) for t in report.transformers]
    page = _PAGE.format(since=_fmt(report.since), until=_fmt(report.until), reaction=f"{report.reaction_s:g}",
                        made=_fmt(datetime.now(UTC)), sections="\n".join(sections),
                        skipped=(f"<p class='warn'>{report.skipped} stored records could not be read and are left "
                                 "out.</p>" if report.skipped else ""),
                        toc=" · ".join(f"<a href='#t-{_e(t.tid)}'>{_e(t.tid)}</a>" for t in report.transformers))
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _section(report: Report, t: TransformerReport, out: Path) -> str:
    parts = [f"<section id='t-{_e(t.tid)}'><h2>{_e(t.tid)}</h2>"]
    above = sum(i.above_kwh for i in t.intervals)
    above_late = sum(i.above_after_reaction_kwh for i in t.intervals)
    energy = sum(i.energy_kwh for i in t.intervals)
    s = t.summary
    parts.append("<div class='cards'>" + "".join(
        f"<div class='card{' bad' if bad else ''}'><b>{v}</b><span>{_e(label)}</span></div>" for v, label, bad in (
            (f"{energy:.1f} kWh", "energy taken", False),
            (f"{above_late:.2f} kWh", "above the limit after the reaction window", above_late > 0.005),
            (f"{above:.2f} kWh", "above the limit in all", False),
            (str(s.served), "sessions served", False),
            (f"{s.guarantee_met}/{s.guarantee_judged}", "guaranteed minimum delivered", bool(s.guarantee_missed)),
            (str(s.left_early), "left before their departure", False),
            (f"{s.need_met}/{s.served}", "full need delivered", False),
            (str(len(t.profiles)), "profiles sent", False),
            (str(len(t.findings)), "verification findings", bool(t.findings)),
        )) + "</div>")
    if t.points:
        name = f"{_slug(t.tid)}-load.png"
        _load_plot(report, t, out / name)
        parts.append(f"<figure><img src='{name}' alt='load and limit of {_e(t.tid)}' class='plot' data-plot='load'>"
                     f"<figcaption>Load (non-EV and EV stacked) at {t.resolution_s:g} s, the limit in force, the "
                     f"mean per 15-minute settlement interval, and the energy above the limit per interval "
                     f"(pale: within {report.reaction_s:g} s of the limit becoming stricter).</figcaption></figure>")
    else:
        parts.append("<p class='warn'>No load history stored for this period (grid.history: was the daemon "
                     "running with grid control?).</p>")
    if t.sessions:
        name = f"{_slug(t.tid)}-sessions.png"
        _session_plot(t, out / name)
        parts.append(f"<figure><img src='{name}' alt='sessions of {_e(t.tid)}' class='plot' data-plot='sessions'>"
                     "<figcaption>Energy delivered per session against its need and guaranteed minimum "
                     f"(guarantee misses first; at most {SESSION_BARS}).</figcaption></figure>")
    parts.append(_interval_table(t))
    parts.append(_session_table(t))
    parts.append(_profile_table(t))
    parts.append(_finding_table(t))
    parts.append("</section>")
    return "\n".join(parts)


def _interval_table(t: TransformerReport) -> str:
    rows = []
    for i in t.intervals:
        if i.covered_s <= 0 and not i.profiles and not i.findings:
            continue
        bad = i.above_after_reaction_kwh > 0.0005
        rows.append(f"<tr{' class=bad' if bad else ''}><td>{_fmt(datetime.fromtimestamp(i.start, UTC))}</td>"
                    f"<td class=num>{_num(i.mean_kw)}</td><td class=num>{_num(i.peak_kw)}</td>"
                    f"<td class=num>{_num(i.limit_kw)}</td><td class=num>{i.energy_kwh:.2f}</td>"
                    f"<td class=num>{i.above_kwh:.3f}</td><td class=num>{i.above_after_reaction_kwh:.3f}</td>"
                    f"<td class=num>{i.covered_s / 9:.0f} %</td><td class=num>{i.profiles}</td>"
                    f"<td class=num>{i.findings}</td></tr>")
    if not rows:
        return "<p class='muted'>No settlement interval with data.</p>"
    return ("<h3>Settlement intervals (15 min)</h3><table class='intervals'><thead><tr><th>start (UTC)</th>"
            "<th>mean kW</th><th>peak kW</th><th>limit kW</th><th>energy kWh</th><th>above kWh</th>"
            "<th>above after reaction kWh</th><th>data</th><th>profiles</th><th>findings</th></tr></thead><tbody>"
            + "".join(rows[:MAX_ROWS * 5]) + "</tbody></table>")


def _session_table(t: TransformerReport) -> str:
    if not t.sessions:
        return "<h3>Sessions</h3><p class='muted'>No session ended in this period.</p>"
    rows = []
    for o in t.sessions[:MAX_ROWS]:
        cls = " class=bad" if o.guarantee_met is False else ""
        rows.append(f"<tr{cls}><td>{_e(o.station_id)}/{o.evse_id}</td><td>{_e(o.transaction_id)}</td>"
                    f"<td>{_fmt(o.started_at)}</td><td>{_fmt(o.ended_at)}</td>"
                    f"<td>{_fmt(o.departure) if o.departure else '–'}{' (left early)' if o.left_early else ''}</td>"
                    f"<td class=num>{o.delivered_kwh:.2f}</td><td class=num>{_num(o.need_kwh)}</td>"
                    f"<td class=num>{_num(o.guaranteed_kwh)}</td><td>{_e(o.need_source)}</td>"
                    f"<td>{'left early' if o.guarantee_met is None and o.left_early else _yes(o.guarantee_met)}</td>"
                    f"<td>{_yes(o.need_met)}</td>"
                    f"<td>{_e(o.fixed_reason or '')}</td></tr>")
    more = f"<p class='muted'>{len(t.sessions) - MAX_ROWS} more not listed.</p>" if len(t.sessions) > MAX_ROWS else ""
    return ("<h3>Sessions served</h3><table class='sessions'><thead><tr><th>station/EVSE</th><th>transaction</th>"
            "<th>started</th><th>ended</th><th>departure</th><th>delivered kWh</th><th>need kWh</th>"
            "<th>guaranteed kWh</th><th>need from</th><th>guarantee met</th><th>need met</th><th>uncontrollable</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>" + more)


def _profile_table(t: TransformerReport) -> str:
    if not t.profiles:
        return "<h3>Profiles sent</h3><p class='muted'>None in this period.</p>"
    tally = ", ".join(f"{_e(status)}: {n}" for status, n in t.profile_status)
    rows = "".join(f"<tr{'' if p['status'] == 'Accepted' else ' class=bad'}><td>{_fmt(p['at'])}</td>"
                   f"<td>{_e(p['station_id'])}/{p['evse_id']}</td><td>{_e(p['purpose'] or '')}</td>"
                   f"<td class=num>{_num(p['limit'])} {_e(p['unit'] or '')}</td><td>{_e(p['status'])}</td></tr>"
                   for p in t.profiles[-MAX_ROWS:])
    note = f" (the last {MAX_ROWS} listed)" if len(t.profiles) > MAX_ROWS else ""
    return (f"<h3>Profiles sent</h3><p>{len(t.profiles)} profiles: {tally}{note}.</p><table class='profiles'><thead>"
            "<tr><th>sent</th><th>station/EVSE</th><th>purpose</th><th>first limit</th><th>answer</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _finding_table(t: TransformerReport) -> str:
    if not t.findings:
        return "<h3>Verification findings</h3><p class='muted'>None: every station did what it was told.</p>"
    tally = ", ".join(f"{_e(kind)}: {n}" for kind, n in t.finding_kinds)
    rows = "".join(f"<tr><td>{_e(_fmt_iso(f.get('at')))}</td><td>{_e(str(f.get('station_id')))}/{f.get('evse_id')}</td>"
                   f"<td>{_e(str(f.get('finding')))}</td><td>{_e(str(f.get('detail') or ''))}</td></tr>"
                   for f in t.findings[:MAX_ROWS])
    return (f"<h3>Verification findings</h3><p>{tally}</p><table class='findings'><thead><tr><th>at</th>"
            f"<th>station/EVSE</th><th>finding</th><th>detail</th></tr></thead><tbody>{rows}</tbody></table>")


# Plots -----------------------------------------------------------------------------------------
def _load_plot(report: Report, t: TransformerReport, path: Path) -> None:
    times = [datetime.fromtimestamp(p["t"] or 0.0, UTC) for p in t.points]
    ev = [p.get("ev_kw") or 0.0 for p in t.points]
    non_ev = [p.get("non_ev_kw") or 0.0 for p in t.points]
    limit = [float("nan") if p.get("limit_kw") is None else p["limit_kw"] for p in t.points]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.2), sharex=True, height_ratios=[3, 1.2],
                                      constrained_layout=True)
    top.stackplot(times, non_ev, ev, colors=[COLORS["non_ev"], COLORS["ev"]], alpha=0.55,
                  labels=["non-EV load", "EV load"], step="post")
    top.step(times, limit, where="post", color=COLORS["limit"], linewidth=2, label="limit")
    starts = [datetime.fromtimestamp(i.start, UTC) for i in t.intervals]
    means = [float("nan") if i.mean_kw is None else i.mean_kw for i in t.intervals]
    if starts:
        top.step(starts + [datetime.fromtimestamp(t.intervals[-1].start + 900, UTC)], means + means[-1:],
                 where="post", color=COLORS["mean"], linewidth=1.5, linestyle="--", label="15-min mean")
    top.set_ylabel("kW")
    top.set_title(f"{t.tid}: load against the limit")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    within = [i.above_kwh - i.above_after_reaction_kwh for i in t.intervals]
    late = [i.above_after_reaction_kwh for i in t.intervals]
    # Each interval's bar spans the part of it inside the report (a short report is part of one interval).
    lo, hi = report.since.timestamp(), report.until.timestamp()
    lefts = [max(i.start, lo) / 86400 for i in t.intervals]  # matplotlib's dates: days since 1970
    widths = [0.96 * (min(i.start + 900, hi) - max(i.start, lo)) / 86400 for i in t.intervals]
    bottom.bar(lefts, late, width=widths, align="edge", color=COLORS["over"], label="after the reaction window")
    bottom.bar(lefts, within, width=widths, align="edge", bottom=late, color=COLORS["late"],
               label="within the reaction window")
    bottom.set_ylabel("kWh above")
    bottom.grid(alpha=0.3)
    bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    span = (report.until - report.since).total_seconds()
    fmt = "%m-%d" if span > 3 * 86400 else "%m-%d %H:%M" if span > 6 * 3600 else "%H:%M" if span > 900 else "%H:%M:%S"
    bottom.xaxis.set_major_formatter(mdates.DateFormatter(fmt, tz=UTC))  # type: ignore[no-untyped-call]
    bottom.set_xlabel("UTC")
    bottom.set_xlim(report.since, report.until)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _session_plot(t: TransformerReport, path: Path) -> None:
    shown = t.sessions[:SESSION_BARS]
    labels = [f"{o.station_id}/{o.evse_id}" for o in shown]
    fig, ax = plt.subplots(figsize=(11, max(2.2, 0.28 * len(shown) + 1.2)), constrained_layout=True)
    y = list(range(len(shown)))
    colors = [COLORS["over"] if o.guarantee_met is False else COLORS["ev"] for o in shown]
    ax.barh(y, [o.delivered_kwh for o in shown], color=colors, alpha=0.8, label="delivered")
    ax.scatter([o.need_kwh if o.need_kwh is not None else float("nan") for o in shown], y, marker="|", s=250,
               color="#14324f", label="need", zorder=3)
    ax.scatter([o.guaranteed_kwh if o.guaranteed_kwh is not None else float("nan") for o in shown], y, marker="D",
               s=30, color=COLORS["limit"], label="guaranteed minimum", zorder=3)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("kWh")
    ax.set_title(f"{t.tid}: sessions served ({len(t.sessions)})")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# Helpers ---------------------------------------------------------------------------------------
def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _fmt(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _fmt_iso(value: object) -> str:
    try:
        return _fmt(datetime.fromisoformat(str(value)))
    except ValueError:
        return str(value)


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _yes(value: bool | None) -> str:
    return {True: "yes", False: "<b class='no'>NO</b>", None: "–"}[value]


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Netbewust report {since} – {until}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 0; padding: 20px 28px; color: #1d2733; background: #f4f6f8; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }} h2 {{ margin: 28px 0 8px; font-size: 18px; }}
h3 {{ font-size: 15px; margin: 18px 0 6px; }}
section {{ background: #fff; border: 1px solid #dde3ea; border-radius: 10px; padding: 6px 18px 16px; margin-top: 16px; }}
.muted {{ color: #6b7785; }} .warn {{ color: #c62828; font-weight: 600; }}
.cards {{ display: flex; gap: 10px; flex-wrap: wrap; }}
.card {{ border: 1px solid #dde3ea; border-radius: 8px; padding: 6px 12px; min-width: 140px; }}
.card b {{ display: block; font-size: 18px; }} .card span {{ color: #6b7785; font-size: 12px; }}
.card.bad {{ border-color: #c62828; background: #fdecec; }} .card.bad b {{ color: #c62828; }}
figure {{ margin: 12px 0; }} img.plot {{ max-width: 100%; border: 1px solid #eef1f4; }}
figcaption {{ color: #6b7785; font-size: 12px; }}
table {{ border-collapse: collapse; font-size: 12.5px; margin: 4px 0 8px; }}
th {{ text-align: left; color: #6b7785; font-weight: 500; border-bottom: 1px solid #dde3ea; padding: 3px 8px; }}
td {{ border-bottom: 1px solid #eef1f4; padding: 3px 8px; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.bad td {{ background: #fdecec; }} b.no {{ color: #c62828; }}
</style></head>
<body>
<h1>Netbewust: what happened on the grid</h1>
<p class="muted">{since} – {until} UTC · reaction window {reaction} s · made {made} UTC · {toc}</p>
{skipped}
{sections}
</body></html>
"""
